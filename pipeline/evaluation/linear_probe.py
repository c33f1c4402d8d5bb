"""Linear probe: logistic regression on standardised frozen features.

As in DINOv2's linear evaluation, the regularisation strength is chosen on a
validation split carved from the (labelled) training data, then the probe is
refit on all of it. With few labels a single split would leave one or two
validation examples, so small subsets fall back to stratified k-fold
cross-validation, and subsets too small even for that use the grid's middle value.
The test split is never seen before the final prediction.

The objective is sklearn's ``LogisticRegression`` (L2, unpenalised intercept,
optional balanced class weights; the tests compare against it), solved with torch's
L-BFGS along the grid from strong to weak regularisation, each ``C`` warm-started
from the previous one, and the refit on all labels from the chosen ``C``'s solution.
A cross-validated curve needs hundreds of probes; warm starts keep each to a few
dozen iterations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold, train_test_split

from pipeline.config.eval import LinearProbeConfig
from pipeline.evaluation.metrics import classification_metrics

# L-BFGS stops when the largest gradient entry of the (per-sample averaged) loss is below TOL_GRAD,
# or the loss changes by less than TOL_CHANGE: the probabilities agree with sklearn's to ~5e-3,
# far below the fold-to-fold noise of any score, at a fraction of the iterations.
TOL_GRAD = 1e-4
TOL_CHANGE = 1e-7


@dataclass
class ProbeResult:
    """Test predictions and how ``C`` was chosen."""

    pred: np.ndarray
    proba: np.ndarray
    c: float
    val_score: float
    selection: str  # "holdout", "kfold<k>" or "default"


@dataclass
class LogReg:
    """Standardisation and weights of ``len(cs)`` fitted logistic regressions."""

    mean: torch.Tensor  # (d,)
    scale: torch.Tensor  # (d,)
    w: torch.Tensor  # (n_c, d, k); k = 1 for a binary task (sklearn's parametrisation)
    b: torch.Tensor  # (n_c, k)
    classes: np.ndarray  # class ids the columns stand for

    def proba(self, x: np.ndarray, num_classes: int) -> np.ndarray:
        """Class probabilities ``(n_c, n, num_classes)`` (classes absent from training get 0)."""
        z = torch.as_tensor(np.asarray(x), dtype=self.w.dtype)
        z = (z - self.mean) / self.scale
        logits = torch.einsum("nd,cdk->cnk", z, self.w) + self.b[:, None, :]
        if logits.shape[-1] == 1:
            p1 = torch.sigmoid(logits[..., 0])
            p = torch.stack([1 - p1, p1], dim=-1)
        else:
            p = logits.softmax(-1)
        out = np.zeros((p.shape[0], p.shape[1], num_classes))
        out[:, :, self.classes] = p.detach().numpy()
        return out


def sample_weights(y: np.ndarray, class_weight: str | None) -> np.ndarray:
    """sklearn's ``class_weight``: ``"balanced"`` weighs class ``c`` by ``n / (n_classes * n_c)``."""
    if class_weight is None:
        return np.ones(len(y))
    if class_weight != "balanced":
        raise ValueError(f"class_weight={class_weight!r}; choose None or 'balanced'")
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    return (len(y) / (len(classes) * counts))[inv]


def fit_logreg(
    x: np.ndarray,
    y: np.ndarray,
    cs: Sequence[float],
    class_weight: str | None = None,
    max_iter: int = 200,
    init: LogReg | None = None,
) -> LogReg:
    """Fit one L2 logistic regression per ``C`` in ``cs``, on features standardised with their own mean and std.

    Minimises, for each ``C``, ``C * sum_i s_i * loss_i + ||W||^2 / 2`` (sklearn's objective), divided
    by ``C * n``. The ``C`` values are solved one after the other, each starting from the previous
    solution (a regularisation path: from strong to weak regularisation, few iterations each).
    """
    dtype = torch.float32  # the solve is memory-bound; float32 is plenty at TOL_GRAD
    classes, yi = np.unique(np.asarray(y), return_inverse=True)
    if len(classes) < 2:
        raise ValueError("a linear probe needs at least two classes in its training labels")
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    mean, scale = xt.mean(0), xt.std(0, unbiased=False)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # sklearn leaves constant features unscaled
    z = ((xt - mean) / scale).to(dtype)
    n, d = z.shape
    k = 1 if len(classes) == 2 else len(classes)
    s = torch.as_tensor(sample_weights(yi, class_weight), dtype=dtype)
    target = torch.as_tensor(yi)
    yf = target.to(dtype)
    onehot = F.one_hot(target, len(classes)).to(dtype)
    if init is not None and init.w.shape[1:] == (d, k):
        w, b = init.w[0].clone(), init.b[0].clone()
    else:
        w, b = torch.zeros(d, k, dtype=dtype), torch.zeros(k, dtype=dtype)
    ws, bs = [], []
    for c in sorted(cs):
        w, b = w.clone(), b.clone()
        opt = torch.optim.LBFGS(
            [w, b],
            lr=1,
            max_iter=max_iter,
            history_size=10,
            tolerance_grad=TOL_GRAD,
            tolerance_change=TOL_CHANGE,
            line_search_fn="strong_wolfe",
        )

        def closure(
            w: torch.Tensor = w, b: torch.Tensor = b, opt: torch.optim.LBFGS = opt, c: float = c
        ) -> torch.Tensor:
            # Loss and gradient by hand: two matrix products, no autograd graph (thousands of small solves).
            with torch.no_grad():
                logits = z @ w + b
                if k == 1:
                    per = F.binary_cross_entropy_with_logits(logits[:, 0], yf, reduction="none")
                    r = (torch.sigmoid(logits[:, 0]) - yf).unsqueeze(1)
                else:
                    per = F.cross_entropy(logits, target, reduction="none")
                    r = logits.softmax(1) - onehot
                r = r * (s / n).unsqueeze(1)
                w.grad = z.T @ r + w / (c * n)
                b.grad = r.sum(0)
                return (per * s).sum() / n + (w**2).sum() / (2 * c * n)

        opt.step(closure)
        w, b = w.detach(), b.detach()
        ws.append(w)
        bs.append(b)
    order = np.argsort(np.argsort(list(cs)))  # back to the order of cs
    return LogReg(
        mean.to(dtype),
        scale.to(dtype),
        torch.stack([ws[i] for i in order]),
        torch.stack([bs[i] for i in order]),
        classes,
    )


def _score(y: np.ndarray, proba: np.ndarray, num_classes: int, metric: str) -> float:
    m = classification_metrics(y, proba.argmax(1), proba, num_classes)
    # AUROC exists for binary tasks only (and needs both classes in the validation split).
    return m.get(metric, m["balanced_accuracy"])


def _splits(y: np.ndarray, opts: LinearProbeConfig, seed: int) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    counts = np.bincount(y)
    counts = counts[counts > 0]
    idx = np.arange(len(y))
    if np.all(np.floor(counts * opts.val_fraction) >= opts.min_val_per_class):
        tr, va = train_test_split(idx, test_size=opts.val_fraction, stratify=y, random_state=seed)
        return "holdout", [(tr, va)]
    k = int(min(opts.max_folds, counts.min()))
    if k >= 2:
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return f"kfold{k}", list(skf.split(idx, y))
    return "default", []


def fit_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    num_classes: int,
    opts: LinearProbeConfig | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Choose ``C`` on labelled data only, refit on all of it, predict the test set."""
    opts = opts or LinearProbeConfig()
    y_train = np.asarray(y_train)
    if len(np.unique(y_train)) < 2:
        raise ValueError("a linear probe needs at least two classes in its training labels")
    grid: Sequence[float] = sorted(opts.c_grid)
    how, splits = _splits(y_train, opts, seed)
    best_c, best = float(grid[len(grid) // 2]), float("nan")
    init: LogReg | None = None
    if splits:
        scores = np.zeros((len(splits), len(grid)))
        valid = np.zeros(len(splits), dtype=bool)
        fits = []
        for i, (tr, va) in enumerate(splits):
            if len(np.unique(y_train[tr])) < 2:
                continue
            fit = fit_logreg(x_train[tr], y_train[tr], grid, opts.class_weight, opts.max_iter)
            p = fit.proba(x_train[va], num_classes)
            scores[i] = [_score(y_train[va], p[j], num_classes, opts.select_metric) for j in range(len(grid))]
            valid[i] = True
            fits.append(fit)
        if valid.any():
            mean = scores[valid].mean(0)
            # Ties go to the stronger regularisation (earlier in an ascending grid).
            j = int(np.argmax(mean))
            best_c, best = float(grid[j]), float(mean[j])
            f0 = fits[0]
            init = LogReg(f0.mean, f0.scale, f0.w[j : j + 1], f0.b[j : j + 1], f0.classes)
    model = fit_logreg(x_train, y_train, [best_c], opts.class_weight, opts.max_iter, init)
    proba = model.proba(x_test, num_classes)[0]
    return ProbeResult(pred=proba.argmax(1), proba=proba, c=best_c, val_score=best, selection=how)
