"""What the text encoders share: token ids and an attention mask in, features pooled over the real tokens out."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .._family import TINY_SIZES, Family

TEXT_TOKENS = 128  # the sequence length text encoders are costed and timed at (at most the model's positions)
EXAMPLE_TOKEN = 5  # the id every example token has: past the special tokens of a BERT vocabulary
#: The names of an exported text encoder's outputs, as optimum's `ORTModelForFeatureExtraction` and
#: sentence-transformers' ONNX backend read them.
TEXT_OUTPUTS = ("last_hidden_state", "sentence_embedding")
SYNTHETIC_TEXTS = (
    "a short sentence",
    "the quick brown fox jumps over the lazy dog",
    "export the compressed model and check it",
    "tokens of several lengths make the sequence axis dynamic, and padding is masked",
    "one more",
)


class TextFamily(Family):
    """Calling conventions shared by the text encoders: token ids in, the mean over real tokens out."""

    modality = "text"
    input_names = ("input_ids", "attention_mask", "token_type_ids")
    sequence_inputs = True
    inputs_noun = "texts"
    processor_class = "AutoTokenizer"
    tiny_sizes: ClassVar[dict[str, Any]] = {**TINY_SIZES, "vocab_size": 100, "max_position_embeddings": 64}

    # ---- inputs ------------------------------------------------------------------------
    def example_inputs(self, config, *, batch=1, seq_len=None, processor=None):
        want = TEXT_TOKENS if seq_len is None else int(seq_len)
        tokens = min(want, int(getattr(config, "max_position_embeddings", want)))
        ids = torch.full((batch, tokens), EXAMPLE_TOKEN, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def synthetic_inputs(self, config, *, batch, rng, offset=0, processor=None, max_length):
        """`SYNTHETIC_TEXTS` in turn through the tokenizer, else random ids (`8 + offset` of them, so that batches
        differ in length)."""
        if processor is not None:
            texts = [SYNTHETIC_TEXTS[(offset + i) % len(SYNTHETIC_TEXTS)] for i in range(batch)]
            enc = processor(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            return {k: enc[k] for k in self.input_names if k in enc}
        vocab = int(getattr(config, "vocab_size", 100))
        ids = torch.from_numpy(rng.integers(min(EXAMPLE_TOKEN, vocab - 1), vocab, (batch, 8 + offset)))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    # ---- running -----------------------------------------------------------------------
    def embed(self, embeddings, inputs):
        device = next(embeddings.parameters()).device
        ids = inputs["input_ids"].to(device)
        mask = self.token_mask(inputs, device)
        kwargs = {}
        if inputs.get("token_type_ids") is not None:
            kwargs["token_type_ids"] = inputs["token_type_ids"].to(device)
        return embeddings(input_ids=ids, **kwargs), mask

    def token_mask(self, inputs, device):
        mask = inputs.get("attention_mask")
        if mask is None:  # every token real
            return torch.ones(inputs["input_ids"].shape, dtype=torch.bool, device=device)
        return mask.to(device).bool()

    def pool(self, final_norm, normed, mask, config):
        """Mean over real tokens, as sentence-transformers pools."""
        m = mask.to(normed.dtype).unsqueeze(-1)
        return (normed * m).sum(1) / m.sum(1).clamp_min(1e-9)

    # ---- export ------------------------------------------------------------------------
    def export_outputs(self, model):
        """The token embeddings and the sentence embedding the search scored (`CompressedModel.pooled`: the
        source's sentence-transformers pooling and normalisation, else the mean over real tokens), never a head
        such as BERT's tanh pooler, which no text-encoder runtime reads."""
        return TEXT_OUTPUTS

    def export_forward(self, model, inputs):
        hidden, mask, _ = model.run(inputs)
        return self.normalize(model.final_norm, hidden), model.pooled(hidden, mask)

    # ---- tiny test models ----------------------------------------------------------------
    def tiny_inputs(self, config, *, batch=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(EXAMPLE_TOKEN, int(config.vocab_size), (batch, 10), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 6:] = 0  # one padded sequence
        ids[0, 6:] = 0
        return {"input_ids": ids, "attention_mask": mask}
