"""BERT-style text encoders (BERT, RoBERTa, XLM-R; sentence-transformers' MiniLM): post-norm blocks with a
bidirectional attention mask, features pooled as the checkpoint's sentence-transformers folder says."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .._family import Parts, first_attr, register_family
from ._text import TextFamily

#: The tiny test tokenizer's WordPiece vocabulary: BERT's five special tokens, then made-up words.
TINY_VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@register_family
class BertFamily(TextFamily):
    name = "bert"
    model_types = ("bert", "roberta", "xlm-roberta")
    backbone_attrs = ("bert", "roberta")
    sentence_transformers = True
    classifier_missing = (
        "BertForSequenceClassification classifies the pooler's tanh(dense([CLS])), not the mean of the tokens the "
        "probe reads"
    )
    # sentence-transformers/all-MiniLM-L6-v2's fields are BertConfig's defaults but for its sizes
    tiny_models = {"bert": ("BertModel", {})}

    def parts(self, model: nn.Module) -> Parts:
        bb = self.backbone(model)
        head, kind = self.find_head(model, bb)
        return Parts(bb.embeddings, first_attr(bb, *self.blocks_paths), nn.Identity(), head, kind)

    def find_head(self, model, backbone):
        pooler = getattr(backbone, "pooler", None)
        return (pooler, "pooler") if isinstance(pooler, nn.Module) else (None, None)

    def block_kwargs(self, config, hidden, mask, *, rotary=None):
        from transformers.masking_utils import create_bidirectional_mask

        # Always materialized (no all-ones shortcut), so a traced forward and an eager one agree.
        mask = create_bidirectional_mask(
            config=config, inputs_embeds=hidden, attention_mask=mask.long(), allow_is_bidirectional_skip=False
        )
        return {"attention_mask": mask}

    def mlp_branch(self, block):
        return None  # post-norm: the LayerNorm after the residual add leaves no additive MLP branch

    def save_tiny_processor(self, config, directory: Path) -> None:
        import transformers

        vocab = [*TINY_VOCAB] + [f"w{i}" for i in range(int(config.vocab_size) - len(TINY_VOCAB))]
        (directory / "vocab.txt").write_text("\n".join(vocab))
        transformers.BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
