"""Leave-one-out predictions of ``StandardScaler`` + ``LogisticRegression`` without n cold fits.

``cross_val_predict(classifier, X, y, cv=LeaveOneOut())`` fits the pipeline n times from zero.
For the tutorial's classifier (:func:`~lfhelpers.similarity.evaluation.texture.make_classifier`:
a ``StandardScaler``, then an L2 multinomial ``LogisticRegression``) every one of those fits
minimises a strictly convex objective, so its prediction is fixed by the data;
:func:`leave_one_out_predict` computes the same n optima, all at once, to a gradient of 1e-10.
scikit-learn's ``lbfgs`` stops at ``tol`` (1e-4), so a few of its predictions, on near-ties,
are not the optimum's: on notebook 05's 480 photos, 2 (color) and 5 (texture + color).

How. Fold *i* scales by its own ``StandardScaler`` (``scale_i``). Written in the full data's
scaled features *z*, its model ``(W', b')`` is ``V = W' * scale / scale_i`` with the same
decision values, so fold *i* minimises, over the same *z* for every fold,
``C * sum_{j != i} loss(V z_j + c, y_j) + 1/2 * sum_f q_if * |V[:, f]|**2`` with
``q_if = (scale_if / scale_f) ** 2``. Each fold starts from the full fit and takes Newton steps
with the full fit's Hessian, updated for the left-out row and the large penalty changes
(Woodbury), accelerated by Anderson mixing and guarded by an Armijo line search.
Warm-starting scikit-learn's ``lbfgs`` from the full fit instead is not enough: at its 1e-4
tolerance it stops near the full fit, which has seen the left-out photo (on notebook 05's
features up to 11 of 480 predictions moved, and the accuracy rose).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
from scipy.linalg import cho_factor, lapack
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

#: Largest number of coefficients (classes × (features + 1)) of the fast path; its Hessian
#: inverse takes 8 bytes × this squared (3,728 for notebook 05's texture + color: 111 MB).
MAX_PARAMETERS = 6000
#: Stop when every gradient entry, divided by ``C`` × training rows, is below this.
GTOL = 1e-10
#: Penalty ratios ``q`` further than this from 1 go into the Newton step exactly.
Q_EXACT = 0.1
BLOCK_BYTES = 2**28  # working memory of the folds solved together
DEPTH = 5  # Anderson history
MAX_PASSES = 200


def fast_path(classifier: BaseEstimator) -> bool:
    """Whether :func:`leave_one_out_predict` solves ``classifier``'s folds itself.

    Parameters
    ----------
    classifier : estimator

    Returns
    -------
    bool
        True for a ``Pipeline`` of a plain ``StandardScaler`` and a ``LogisticRegression`` with
        an intercept, an L2 penalty (finite ``C``), no class weights and a smooth solver
        (``lbfgs``, ``newton-cg``, ``newton-cholesky``): the shape of ``make_classifier``'s.
    """
    if not isinstance(classifier, Pipeline) or len(classifier.steps) != 2:
        return False
    scaler, model = classifier[0], classifier[-1]
    if type(scaler) is not StandardScaler or type(model) is not LogisticRegression:
        return False
    return bool(scaler.with_mean and scaler.with_std and model.fit_intercept
                and model.class_weight is None
                and model.solver in ("lbfgs", "newton-cg", "newton-cholesky")
                and model.penalty in ("deprecated", "l2") and model.l1_ratio in (0, None)
                and 0 < model.C < np.inf)


def leave_one_out_predict(classifier: BaseEstimator, X: np.ndarray, y: Sequence[str],
                          n_jobs: int | None = None) -> np.ndarray:
    """Leave-one-out prediction of each row, as ``cross_val_predict(..., LeaveOneOut())``.

    Parameters
    ----------
    classifier : estimator
        Solved here when :func:`fast_path` holds and there are 3+ classes; otherwise passed to
        ``cross_val_predict``.
    X : ndarray of shape (n, d)
    y : sequence
        Class of each row; each class needs 2+ rows.
    n_jobs : int, optional
        Parallel fits of ``cross_val_predict``; the fast path runs on one thread.

    Returns
    -------
    ndarray
        The predicted class of each row by the model fitted without it.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    decisions = loo_decisions(classifier, X, y)
    if decisions is None:
        return cross_val_predict(classifier, X, y, cv=LeaveOneOut(), n_jobs=n_jobs)
    classes, values = decisions
    return classes[np.argmax(values, axis=1)]


def loo_decisions(classifier: BaseEstimator, X: np.ndarray, y: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Classes and ``decision_function`` of each row by its leave-one-out optimum.

    Parameters
    ----------
    classifier : estimator
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)

    Returns
    -------
    (classes, values) or None
        The sorted classes and the ``(n, classes)`` decision values; ``None`` when the fast
        path does not apply: not :func:`fast_path`, under 3 classes (the binary loss differs),
        a class of one row, or more than :data:`MAX_PARAMETERS` coefficients.
    """
    classes, yi = np.unique(y, return_inverse=True)
    if (not fast_path(classifier) or len(classes) < 3 or np.bincount(yi).min() < 2
            or len(classes) * (X.shape[1] + 1) > MAX_PARAMETERS):
        return None
    # One BLAS thread: on 2 shared cores, 2 threads made notebook 05's largest set 4x slower,
    # and 2 joblib workers over the folds 1.2-1.7x slower, than one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        return classes, _Folds(classifier, X, yi, len(classes)).solve()


class _Folds:
    """The n leave-one-out problems in the full data's scaled coordinates."""

    def __init__(self, classifier: Pipeline, X: np.ndarray, yi: np.ndarray, k: int) -> None:
        self.classifier, self.X = classifier, X
        full = clone(classifier).fit(X, yi)
        n, d = X.shape
        self.n, self.k, self.f, self.C = n, k, d + 1, float(full[-1].C)
        self.z = np.hstack([full[0].transform(X), np.ones((n, 1))])  # intercept column
        self.theta0 = np.hstack([full[-1].coef_, full[-1].intercept_[:, None]]).ravel()
        self.onehot = np.eye(k)[yi].T  # (k, n)
        keep = np.ones(n, bool)
        self.q = np.zeros((n, self.f))  # penalty weight of each fold's coefficients
        for i in range(n):
            keep[i] = False
            self.q[i, :d] = (clone(full[0]).fit(X[keep]).scale_ / full[0].scale_) ** 2
            keep[i] = True
        self.hinv, self.row_factor = self._hessian()
        self.hinv32 = self.hinv.astype(np.float32)  # for the many Newton steps: 2x faster

    def _hessian(self) -> tuple[np.ndarray, np.ndarray]:
        """Inverse Hessian of the full fit's objective, and each row's curvature factor."""
        k, f, z = self.k, self.f, self.z
        eta = z @ self.theta0.reshape(k, f).T
        prob = np.exp(eta - logsumexp(eta, axis=1, keepdims=True))
        h = np.empty((k, f, k, f))
        for a in range(k):
            for b in range(a, k):
                block = (z * (self.C * prob[:, a] * ((a == b) - prob[:, b]))[:, None]).T @ z
                h[a, :, b, :] = block
                h[b, :, a, :] = block
        h = h.reshape(k * f, k * f)
        h.flat[::k * f + 1] += np.tile(np.r_[np.ones(f - 1), 0.0], k)  # the penalty
        ends = np.arange(1, k + 1) * f - 1
        h[np.ix_(ends, ends)] += 1.0  # the one flat direction: every intercept + t
        factor, _ = cho_factor(h, overwrite_a=True)
        hinv, info = lapack.dpotri(factor, overwrite_c=True)
        if info:
            raise np.linalg.LinAlgError(f"dpotri failed ({info})")
        for j in range(0, k * f, 256):  # mirror the upper triangle, in place
            hinv[j + 256:, j:j + 256] = hinv[j:j + 256, j + 256:].T
            diag = hinv[j:j + 256, j:j + 256]
            diag[:] = np.triu(diag) + np.triu(diag, 1).T
        # row j's loss curvature: C * (diag(p) - p p^T) = lower_j lower_j^T
        root = np.sqrt(prob)
        lower = np.sqrt(self.C) * root[:, :, None] * (np.eye(k) - root[:, :, None] * root[:, None])
        return hinv, lower

    def solve(self) -> np.ndarray:
        """Decision values ``(n, classes)`` of each row by its fold's optimum."""
        big = [np.flatnonzero(np.abs(q[:-1] - 1) > Q_EXACT) for q in self.q]
        order = np.argsort([len(b) for b in big], kind="stable")  # blocks of equal rank
        out = np.empty((self.n, self.k))
        for rows in self._blocks(order, [len(big[i]) for i in order]):
            theta, done = self._solve_block(rows, [big[i] for i in rows])
            out[rows] = np.einsum("bkf,bf->bk", theta.reshape(len(rows), self.k, self.f),
                                  self.z[rows])
            for i in rows[~done]:
                log.warning("Leave-one-out fold %d did not converge; refitting it.", i)
                keep = np.arange(self.n) != i
                model = clone(self.classifier).fit(self.X[keep], np.argmax(self.onehot, 0)[keep])
                out[i] = model.decision_function(self.X[i:i + 1])[0]
        return out

    def _blocks(self, order: np.ndarray, extra: list[int]) -> Iterator[np.ndarray]:
        """``order`` cut into groups of folds that fit in ``BLOCK_BYTES``."""
        start, p = 0, self.k * self.f
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop + 1 - start) * 8 * (
                    p * (self.k * (1 + extra[stop]) + 2 * DEPTH + 8)
                    + 6 * self.k * self.n) <= BLOCK_BYTES:
                stop += 1
            yield order[start:stop]
            start = stop

    def _value_grad(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Objective and gradient of folds ``rows`` at ``theta`` (one row per fold)."""
        nb, k, f = len(rows), self.k, self.f
        eta = (theta.reshape(nb * k, f) @ self.z.T).reshape(nb, k, self.n)
        eta -= eta.max(axis=1, keepdims=True)
        prob = np.exp(eta)
        total = prob.sum(axis=1)
        prob /= total[:, None]
        kept = np.ones((nb, self.n))
        kept[np.arange(nb), rows] = 0.0
        loss = ((np.log(total) - np.einsum("bkn,kn->bn", eta, self.onehot)) * kept).sum(1)
        resid = (prob - self.onehot) * kept[:, None]
        pen = np.repeat(self.q[rows], k, axis=0).reshape(nb, k * f)
        grad = self.C * (resid.reshape(nb * k, self.n) @ self.z).reshape(nb, k * f)
        return self.C * loss + 0.5 * (pen * theta**2).sum(1), grad + pen * theta

    def _woodbury(self, rows: np.ndarray, big: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(H_i - H)`` = V S V^T per fold: ``H^-1 V`` and ``(S^-1 + V^T H^-1 V)^-1``."""
        nb, k, f, hinv = len(rows), self.k, self.f, self.hinv
        lower = self.row_factor[rows]  # the left-out row: S = -1, V = lower ⊗ z
        cols = [(np.arange(k)[:, None] * f + b).ravel() for b in big]  # q changes: unit V
        r = k + max(len(c) for c in cols)
        hv = np.zeros((nb, k * f, r))
        inner = np.zeros((nb, r, r))
        inner[:, np.arange(r), np.arange(r)] = 1.0  # padding
        parts = np.stack([hinv[:, a * f:(a + 1) * f] @ self.z[rows].T for a in range(k)])
        hv[:, :, :k] = parts.transpose(2, 1, 0) @ lower
        zhv = (self.z[rows][:, None, None, :] @ hv[:, :, :k].reshape(nb, k, f, k))[:, :, 0]
        inner[:, :k, :k] = lower.transpose(0, 2, 1) @ zhv - np.eye(k)
        for t, (i, c) in enumerate(zip(rows, cols, strict=True)):
            e = slice(k, k + len(c))
            hv[t, :, e] = hinv[:, c]
            inner[t, e, e] = hinv[np.ix_(c, c)] + np.diag(1.0 / (self.q[i, c % f] - 1.0))
            inner[t, :k, e] = hv[t, c, :k].T
            inner[t, e, :k] = hv[t, c, :k]
        return hv, np.linalg.inv(inner)

    def _solve_block(self, rows: np.ndarray, big: list[np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Anderson-accelerated, line-searched Newton steps on the folds ``rows``."""
        nb, p = len(rows), self.k * self.f
        hv, inner = self._woodbury(rows, big)

        def newton(grad: np.ndarray, idx: np.ndarray) -> np.ndarray:
            coef = inner[idx] @ (hv[idx].transpose(0, 2, 1) @ grad[:, :, None])
            return -(grad.astype(np.float32) @ self.hinv32) + (hv[idx] @ coef)[:, :, 0]

        every = np.arange(nb)
        x = np.repeat(self.theta0[None], nb, axis=0)
        value, grad = self._value_grad(x, rows)
        fx = newton(grad, every)
        step, length, plain = fx.copy(), np.ones(nb), np.ones(nb, bool)
        dx, df, seen = np.zeros((nb, DEPTH, p)), np.zeros((nb, DEPTH, p)), np.zeros(nb, int)
        scale = self.C * (self.n - 1)
        done = np.abs(grad).max(1) <= GTOL * scale
        for _ in range(MAX_PASSES):
            act = np.flatnonzero(~done & (length > 1e-12))
            if not len(act):
                break
            trial = x[act] + length[act, None] * step[act]
            v, g = self._value_grad(trial, rows[act])
            slope = np.einsum("bp,bp->b", grad[act], step[act])
            ok = v <= value[act] + 1e-4 * length[act] * slope + 1e-12 * np.abs(value[act])
            back = act[~ok]
            length[back[plain[back]]] /= 2  # backtrack a Newton step; an Anderson one: drop it
            mixed = back[~plain[back]]
            step[mixed], length[mixed], plain[mixed], seen[mixed] = fx[mixed], 1.0, True, 0
            acc = act[ok]
            if not len(acc):
                continue
            f_new = newton(g[ok], acc)
            slot = seen[acc] % DEPTH
            dx[acc, slot], df[acc, slot] = trial[ok] - x[acc], f_new - fx[acc]
            seen[acc] += 1
            x[acc], value[acc], grad[acc], fx[acc] = trial[ok], v[ok], g[ok], f_new
            done[acc] = np.abs(g[ok]).max(1) <= GTOL * scale
            mixed = _anderson(dx[acc], df[acc], f_new, np.minimum(seen[acc], DEPTH))
            descent = np.einsum("bp,bp->b", g[ok], mixed) < 0
            step[acc] = np.where(descent[:, None], mixed, f_new)
            plain[acc], length[acc] = ~descent, 1.0
        return x, done


def _anderson(dx: np.ndarray, df: np.ndarray, f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Anderson-mixed step from the last ``m`` iterate and Newton-step differences per fold."""
    use = (np.arange(dx.shape[1])[None] < m[:, None]).astype(float)
    gram = (df @ df.transpose(0, 2, 1)) * use[:, :, None] * use[:, None]
    gram += np.eye(dx.shape[1]) * ((1 - use)[:, :, None]
                                   + 1e-12 * np.trace(gram, axis1=1, axis2=2)[:, None, None])
    gamma = np.linalg.solve(gram, (df @ f[:, :, None]) * use[:, :, None])
    return f - ((gamma.transpose(0, 2, 1) * use[:, None]) @ (dx + df))[:, 0]
