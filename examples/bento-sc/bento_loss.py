"""bento-sc's zero-truncated losses, called as ztbench's external candidates call them.

bento-sc (https://pypi.org/project/bento-sc/, version 0.0.8, MIT licence) computes its
losses in methods of torch modules: ``NegativeBinomialNLL.loss(mus, log_thetas, targets)``
and ``PoissonNLL.loss(inputs, targets)``, zero-truncated and without lgamma(k + 1) when
built with ``zero_truncated=True, omit_last_term=True``. These two functions only
reorder the arguments into ztbench's ``fn(k, *params)`` convention and pass clones,
because ``NegativeBinomialNLL.loss`` adds to its inputs in place. Nothing of the
package's arithmetic is copied: every value is bento-sc's own.
"""

import torch
from bento_sc.loss import NegativeBinomialNLL, PoissonNLL

# dim = 1: the modules' output heads (nn.Linear) are never used by .loss.
_NB = NegativeBinomialNLL(1, reduction="none", omit_last_term=True, zero_truncated=True)
_POISSON = PoissonNLL(1, reduction="none", omit_last_term=True, zero_truncated=True)


def ztnb(k: torch.Tensor, mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """``NegativeBinomialNLL.loss(mu, log_theta, k)``: the package takes log theta."""
    return _NB.loss(mu.clone(), log_theta.clone(), k)


def ztpoisson(k: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``PoissonNLL.loss(lam, k)``."""
    return _POISSON.loss(lam.clone(), k)
