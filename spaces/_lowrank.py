"""The `lowrank:r` kind: the best rank-r affine map in least squares (reduced-rank regression), in closed form.

With `W = Sxx⁺ Sxy` the least-squares map and `M = Wᵀ Sxx W` the scatter of its fitted values, the best
rank-r map is `W V_r V_rᵀ`, `V_r` the top-r eigenvectors of `M` (the fitted values' principal directions:
reduced-rank regression with identity weight). The bias matches the means, as `linear`'s does. It runs as
two `nn.Linear`, `d → r` without bias then `r → d` with the bias, so it costs `2·d·r` FLOPs per token and
`2·d·r + d` parameters: below `linear`'s `d²` once `r < d / 2`.

The rank is part of the kind string: `lowrank:96` is a kind of its own (a space may hold `lowrank:32` and
`lowrank:96` side by side), and `translator_class("lowrank:96")` is this class bound to rank 96.
"""

from __future__ import annotations

import re
from functools import cache
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import PlanError
from ._linear import ILL_CONDITIONED, _solve_spd
from ._stats import PairStats
from ._translators import Translator, TranslatorCost, create_translator, register_translator, report_once

RANK = re.compile(r"[1-9]\d*")


@register_translator("lowrank")
class LowRankTranslator(Translator):
    """The best rank-`rank` affine map in least squares, one map shared by all tokens, from the Gram statistics.

    Built from its kind string (`create_translator("lowrank:96")`); fitted, it holds `encoder_ (d, r)`,
    `decoder_ (r, d)`, their product `weight_ (d, d)` and `bias_ (d,)`. An ill-conditioned input scatter is
    solved by the minimum-norm pseudo-inverse, as `linear` does (`solver_`, `ill_conditioned_`).
    """

    parameter = "rank"
    rank: ClassVar[int] = 0  # set by the kind string: the class of `lowrank:96` has rank 96; 0 is the bare family

    @classmethod
    def from_spec(cls, param: str | None) -> type[LowRankTranslator]:
        """The class of `lowrank:<param>`, one per rank; a bare `lowrank` or a rank that is not a positive integer is refused."""
        if param is None:
            raise PlanError(
                "translator kind 'lowrank' needs its rank: write lowrank:r (e.g. lowrank:96), "
                "or give a bare lowrank in `translators` and its ranks in `ranks`"
            )
        if not RANK.fullmatch(param):
            raise PlanError(f"translator kind 'lowrank:{param}': the rank must be a positive integer, e.g. lowrank:96")
        return _with_rank(int(param))

    @classmethod
    def _check_width(cls, dim: int) -> None:
        if cls.rank < 1:
            cls.from_spec(None)  # the bare family: refused, saying how to give the rank
        if cls.rank > dim:
            raise PlanError(
                f"translator kind {cls.kind!r}: rank {cls.rank} is above the width {dim} (a rank goes from 1 to the width)"
            )

    def fit(self, stats: PairStats) -> LowRankTranslator:
        """Least squares, projected on the top-`rank` principal directions of its fitted values; the bias matches the means."""
        self._check_width(stats.sxx.shape[0])
        full, self.solver_ = _solve_spd(stats.sxx, stats.sxy)
        self.ill_conditioned_ = self.solver_ == "pinv"
        if self.ill_conditioned_:
            report_once("ill-conditioned", ILL_CONDITIONED)
        fitted = full.T @ stats.sxx @ full  # scatter of the centered fitted values x W
        _, vectors = np.linalg.eigh((fitted + fitted.T) / 2)  # ascending eigenvalues
        top = np.ascontiguousarray(vectors[:, ::-1][:, : self.rank])
        self.encoder_ = full @ top
        self.decoder_ = np.ascontiguousarray(top.T)
        self.weight_ = self.encoder_ @ self.decoder_
        self.bias_ = stats.mean_y - stats.mean_x @ self.weight_
        return self

    def to_module(self) -> nn.Module:
        """`nn.Sequential(Linear(d, r, bias=False), Linear(r, d))` computing `x @ encoder_ @ decoder_ + bias_`, float32."""
        self._require_fitted()
        module = self.empty_module(self.encoder_.shape[0])
        with torch.no_grad():
            module[0].weight.copy_(torch.from_numpy(np.ascontiguousarray(self.encoder_.T)))
            module[1].weight.copy_(torch.from_numpy(np.ascontiguousarray(self.decoder_.T)))
            module[1].bias.copy_(torch.from_numpy(self.bias_))
        return module

    @classmethod
    def empty_module(cls, dim: int) -> nn.Module:
        cls._check_width(dim)
        return nn.Sequential(nn.Linear(dim, cls.rank, bias=False), nn.Linear(cls.rank, dim))

    @classmethod
    def cost(cls, dim: int, tokens: int) -> TranslatorCost:
        """fvcore's count of the two `nn.Linear`: `d·r` multiply-adds each per token (the bias is not counted)."""
        cls._check_width(dim)
        return TranslatorCost(flops=2 * tokens * dim * cls.rank, params=2 * dim * cls.rank + dim)

    def __reduce__(self):
        # the class of a rank is made at run time: pickle it as its kind string (Ray, multiprocessing)
        return create_translator, (self.kind,), vars(self).copy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank})"


@cache
def _with_rank(rank: int) -> type[LowRankTranslator]:
    """`LowRankTranslator` bound to `rank`, one class per rank (so `type(load(...)) is type(fitted)`)."""
    namespace = {"kind": f"lowrank:{rank}", "rank": rank, "__module__": __name__, "__doc__": LowRankTranslator.__doc__}
    return type(LowRankTranslator.__name__, (LowRankTranslator,), namespace)
