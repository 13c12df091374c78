"""Replays gimvi's interval calibration offline on dumped calibration and test points.

A calibration rule is then tried in seconds on the points of a whole sweep instead of a
40-minute rerun (the trainings do not change with the rule). To dump: apply dump.patch
(`git apply scripts/interval_replay/dump.patch`, never committed: it writes files from inside
the library), build, and run `gimvi evaluate ...` once per pair and seed with
GIMVI_DUMP_DIR=DUMP/<pair>_s<seed> (an empty folder each): calib_<k>.tsv (split, dataset,
gene, x, mu, var of every calibration point of one fold) and test_<k>.tsv (gene, cell, x, mu,
var of fold k's held-out entries). Then

    DUMP=DUMP [ONLY=substring] [DET=1] python3 scripts/interval_replay/replay.py RULE[:k=v,...] ...

prints calibration error, coverage at 80/90/95 %, genes > 10 points under at 90 %, median
90 % width (and with DET=1 the detection-conditional calibration error over nonzero
entries) per run and per pair. Rule "current" reproduced gimvi's own report to the printed
digit on every run it was checked on (docs/notes/intervals-2026-12.md).
"""
import copy
import glob
import os
import sys

import numpy as np
import pandas as pd

GRID = 1000
MIN_PTS, MIN_GENES = 200, 5
FLOOR = 0.01
LEVELS = np.arange(1, 100) / 100.0


def load(d):
    tests = []
    for k in range(5):
        f = f"{d}/test_{k}.tsv"
        if not os.path.exists(f):
            return None
        t = pd.read_csv(f, sep="\t", header=None, names=["gene", "cell", "x", "mu", "v"])
        tests.append(t)
    cal = {}
    for f in glob.glob(f"{d}/calib_*.tsv"):
        c = pd.read_csv(f, sep="\t", header=None, names=["split", "ds", "gene", "x", "mu", "v"])
        c = c[c.ds == 1]
        genes = set(c.gene.unique())
        for k, t in enumerate(tests):
            tg = set(t.gene.unique())
            if not (genes & tg):
                assert k not in cal, (d, k)
                cal[k] = c
    assert len(cal) == 5, (d, len(cal))
    return [(cal[k], tests[k]) for k in range(5)]


def scale(mu, v):
    mu = np.maximum(mu, 0)
    return np.sqrt(np.maximum(v, 0) + mu + FLOOR) / (1 + mu)


def resid(x, mu, v):
    return (np.log1p(np.maximum(x, 0)) - np.log1p(np.maximum(mu, 0))) / scale(mu, v)


class Grid:
    def __init__(self, r):
        r = np.sort(r[np.isfinite(r)])
        self.n = len(r)
        if self.n == 0:
            self.order = None
            return
        pos = np.arange(GRID + 1) * (self.n - 1) / GRID
        i = np.floor(pos).astype(int)
        f = pos - i
        j = np.minimum(i + 1, self.n - 1)
        self.order = r[i] + f * (r[j] - r[i])

    def at(self, rank):
        if self.n == 1:
            return self.order[0]
        pos = np.clip((rank - 1) / (self.n - 1) * GRID, 0, GRID)
        i = int(np.floor(pos))
        f = pos - i
        return self.order[i] + f * (self.order[min(i + 1, GRID)] - self.order[i])


class Table:
    def __init__(self, x, r):
        self.all = Grid(r)
        self.zeros = Grid(r[x <= 0])
        self.nonzero = Grid(r[x > 0])

    def q(self, cov):
        n = self.all.n
        a = 1 - cov
        lo_rank = np.floor((n + 1) * a / 2 + 1e-9)
        hi_rank = np.ceil((n + 1) * (1 - a / 2) - 1e-9)
        low = -np.inf if lo_rank < 1 else self.all.at(lo_rank)
        if hi_rank > n:
            return low, np.inf
        above = n - hi_rank
        nz = self.nonzero.n
        if nz > 0 and above < nz:
            return low, self.nonzero.at(nz - above)
        excess = above - nz
        rank = lo_rank + excess
        lo = self.zeros.at(min(rank, self.zeros.n)) if (self.zeros.n > 0 and rank >= 1) else -np.inf
        return lo, -np.inf


def interval(mu, v, qlo, qhi):
    c, s = np.log1p(np.maximum(mu, 0)), scale(mu, v)
    lo = np.where(np.isneginf(qlo), 0.0, np.maximum(np.expm1(c + s * qlo), 0))
    hi = np.where(np.isposinf(qhi), np.inf, np.maximum(np.maximum(np.expm1(c + s * qhi), 0), lo))
    return lo, hi


def feats(mu, v):
    mu = np.maximum(mu, 0)
    return np.log1p(mu), np.sqrt(np.maximum(v, 0)) / np.maximum(mu, 1e-6)


def tert(a):
    a = np.sort(a[np.isfinite(a)])
    return a[len(a) // 3], a[2 * len(a) // 3]


def build_tables(rule, df, r):
    """Sets rule.pooled and rule.tables (per stratum, enough points and genes) from the
    residuals r of the points df."""
    x = df.x.values
    rule.pooled = Table(x, r)
    st = rule.stratum(df)
    rule.tables = {}
    for k in range(9):
        m = st == k
        if m.sum() >= MIN_PTS and np.unique(df.gene.values[m]).size >= MIN_GENES:
            rule.tables[k] = Table(x[m], r[m])


# ---------------------------------------------------------------- rules
class Current:
    """gimvi's rule: 9 strata of point level x point CV."""

    def __init__(self, cal, **kw):
        l, cv = feats(cal.mu.values, cal.v.values)
        self.le, self.ce = tert(l), tert(cv)
        build_tables(self, cal, resid(cal.x.values, cal.mu.values, cal.v.values))

    def stratum(self, df):
        l, cv = feats(df.mu.values, df.v.values)
        b = lambda x, e: (x > e[0]).astype(int) + (x > e[1]).astype(int)
        return 3 * b(l, self.le) + b(cv, self.ce)

    def intervals(self, t, cov):
        st = self.stratum(t)
        lo = np.zeros(len(t))
        hi = np.zeros(len(t))
        for s in np.unique(st):
            m = st == s
            tab = self.tables.get(s, self.pooled)
            ql, qh = tab.q(cov)
            lo[m], hi[m] = interval(t.mu.values[m], t.v.values[m], ql, qh)
        return lo, hi


class Pooled(Current):
    """One table of all points (no strata)."""

    def stratum(self, df):
        return np.zeros(len(df), dtype=int)


class ShiftFull(Current):
    """The scale with a between-gene variance, s_tot^2 = s^2 + c * sigma^2_G (sigma^2_G: the
    variance over calibration genes of their mean log error); residuals, strata tables and
    intervals all on it. c = 1 is gimvi's rule since 2026-12-07 (night)."""

    def s(self, mu, v):
        return np.sqrt(scale(mu, v) ** 2 + self.sig2)

    def __init__(self, cal, c=1.0, **kw):
        e = np.log1p(np.maximum(cal.x.values, 0)) - np.log1p(np.maximum(cal.mu.values, 0))
        d = pd.Series(e).groupby(cal.gene.values).mean()
        self.sig2 = c * d.var()
        mu, v, x = cal.mu.values, cal.v.values, cal.x.values
        l, cv = feats(mu, v)
        self.le, self.ce = tert(l), tert(cv)
        r = (np.log1p(np.maximum(x, 0)) - np.log1p(np.maximum(mu, 0))) / self.s(mu, v)
        build_tables(self, cal, r)

    def intervals(self, t, cov):
        st = self.stratum(t)
        lo = np.zeros(len(t))
        hi = np.zeros(len(t))
        mu, v = t.mu.values, t.v.values
        for k in np.unique(st):
            m = st == k
            ql, qh = self.tables.get(k, self.pooled).q(cov)
            c, s = np.log1p(np.maximum(mu[m], 0)), self.s(mu[m], v[m])
            lo[m] = 0.0 if np.isneginf(ql) else np.maximum(np.expm1(c + s * ql), 0)
            hi[m] = np.inf if np.isposinf(qh) else np.maximum(np.maximum(np.expm1(c + s * qh), 0), lo[m])
        return lo, hi


class Eff(ShiftFull):
    """Efficiency shifts in log-mu space: sigma^2 = var_g ln(sum x / sum mu); scale adds
    sigma^2 (mu/(1+mu))^2."""

    def __init__(self, cal, c=1.0, **kw):
        g = cal.groupby("gene")
        d = np.log((g.x.sum() + 0.5) / (g.mu.sum() + 0.5))
        sig2 = c * d.var()
        ShiftFull.__init__(self, cal, c=0.0)
        self.sig2 = sig2
        # rebuild with the new scale
        mu, v, x = cal.mu.values, cal.v.values, cal.x.values
        r = (np.log1p(np.maximum(x, 0)) - np.log1p(np.maximum(mu, 0))) / self.s(mu, v)
        build_tables(self, cal, r)

    def s(self, mu, v):
        mu = np.maximum(mu, 0)
        return np.sqrt(scale(mu, v) ** 2 + self.sig2 * (mu / (1 + mu)) ** 2)


class GeneBias:
    """Gene-level efficiency predicted from the gene's mean imputed level (OLS over the
    calibration genes), applied to mu and v before an inner rule."""

    def __init__(self, cal, c=1.0, inner=0.0, **kw):
        """c scales the fitted line; inner > 0 puts sigma^2_G (times inner) in the scale;
        shrink=1 shrinks the line by b^2 / (b^2 + se(b)^2)."""
        g = cal.groupby("gene")
        L = np.log(g.mu.mean() + 1e-3)
        d = np.log((g.x.sum() + 0.5) / (g.mu.sum() + 0.5))
        A = np.vstack([np.ones_like(L), L]).T
        coef = np.linalg.lstsq(A, d.values, rcond=None)[0]
        if kw.get("shrink"):
            # Shrink the line toward 0 by its own uncertainty: factor b^2 / (b^2 + se(b)^2).
            resid = d.values - A @ coef
            n = len(L)
            s2 = resid @ resid / max(n - 2, 1)
            se2 = s2 / max(((L - L.mean()) ** 2).sum(), 1e-12)
            coef = coef * (coef[1] ** 2 / (coef[1] ** 2 + se2))
        self.coef = coef * c
        self.c = c
        self.cal = cal
        calc = self.adjust(cal)
        self.inner = (ShiftFull if inner > 0 else Current)(calc, c=inner) if inner > 0 else Current(calc)

    def adjust(self, df):
        L = np.log(df.groupby("gene").mu.transform("mean").values + 1e-3)
        dhat = self.coef[0] + self.coef[1] * L
        out = df.copy()
        out["mu"] = df.mu.values * np.exp(dhat)
        out["v"] = df.v.values * np.exp(2 * dhat)
        return out

    def stratum(self, df):
        return self.inner.stratum(self.adjust(df))

    def intervals(self, t, cov):
        return self.inner.intervals(self.adjust(t), cov)

    def detected(self, t):
        """(rule, entries) for the detection-conditional intervals: the inner rule's tables
        rebuilt on the adjusted nonzero calibration points (its edges and scale kept), and the
        nonzero test entries adjusted with their genes' levels over all cells, as gimvi does."""
        calc = self.adjust(self.cal)
        det = copy.copy(self.inner)
        nzc = calc[calc.x > 0]
        sfun = getattr(det, "s", scale)
        r = (np.log1p(nzc.x.values) - np.log1p(np.maximum(nzc.mu.values, 0))) / sfun(nzc.mu.values, nzc.v.values)
        build_tables(det, nzc, r)
        tt = self.adjust(t)
        return det, tt[tt.x > 0]


class ShiftPooled(ShiftFull):
    """ShiftFull without strata."""

    def stratum(self, df):
        return np.zeros(len(df), dtype=int)


class GeneStrata(Current):
    """Strata by the gene's mean level (tertiles over genes) x the point's CV."""

    def __init__(self, cal, **kw):
        gl = pd.Series(np.log1p(np.maximum(cal.mu.values, 0))).groupby(cal.gene.values).mean()
        self.ge = tert(gl.values)
        Current.__init__(self, cal)

    def stratum(self, df):
        gl = pd.Series(np.log1p(np.maximum(df.mu.values, 0))).groupby(df.gene.values).transform("mean").values
        l, cv = feats(df.mu.values, df.v.values)
        b = lambda x, e: (x > e[0]).astype(int) + (x > e[1]).astype(int)
        return 3 * b(gl, self.ge) + b(cv, self.ce)


# current: gimvi before 2026-12-07 night; shift:c=1: gimvi from then (sigma^2_G in the scale);
# genebias:shrink=1,inner=1: gimvi since 2026-12-07 late night (the shrunk gene-bias line, then
# sigma^2_G of what it leaves).
RULES = {"current": Current, "pooled": Pooled, "shift": ShiftFull, "shiftpooled": ShiftPooled,
         "genestrata": GeneStrata, "eff": Eff, "genebias": GeneBias}


# ---------------------------------------------------------------- scoring
def score_detected(folds, rule_cls, **kw):
    """Given detection: tables from the nonzero calibration points (shift from all), scored on
    nonzero test entries; returns the CE over nonzero entries."""
    curve = np.zeros(len(LEVELS))
    wsum = 0
    for cal, t in folds:
        rule = rule_cls(cal, **kw)
        if hasattr(rule, "detected"):
            det, tn = rule.detected(t)
        else:
            det = rule_cls(cal, **kw)
            nzc = cal[cal.x > 0]
            # rebuild the tables on detected points with the all-points edges and shift
            mu, v, x = nzc.mu.values, nzc.v.values, nzc.x.values
            sfun = getattr(rule, "s", lambda m, vv: scale(m, vv))
            r = (np.log1p(x) - np.log1p(np.maximum(mu, 0))) / sfun(mu, v)
            build_tables(det, nzc, r)
            tn = t[t.x > 0]
        if len(tn) == 0:
            continue
        ng = t.gene.nunique()
        for k, lev in enumerate(LEVELS):
            lo, hi = det.intervals(tn, lev)
            curve[k] += ng * ((lo <= tn.x.values) & (tn.x.values <= hi)).mean()
        wsum += ng
    curve /= wsum
    d = np.abs(curve - LEVELS)
    return np.sum(0.5 * (d[1:] + d[:-1]) * 0.01)


def score(folds, rule_cls, **kw):
    curve = np.zeros(len(LEVELS))
    wsum = 0
    gene_cov90 = []
    widths = []
    for cal, t in folds:
        rule = rule_cls(cal, **kw)
        ng = t.gene.nunique()
        x = t.x.values
        for k, lev in enumerate(LEVELS):
            lo, hi = rule.intervals(t, lev)
            inside = (lo <= x) & (x <= hi)
            curve[k] += ng * inside.mean()
            if abs(lev - 0.9) < 1e-9:
                gc = pd.Series(inside).groupby(t.gene.values).mean()
                gene_cov90.extend(gc.values)
                widths.append(np.where(np.isfinite(hi - lo), hi - lo, np.finfo(float).max))
        wsum += ng
    curve /= wsum
    d = np.abs(curve - LEVELS)
    ce = np.sum(0.5 * (d[1:] + d[:-1]) * 0.01)
    gc = np.array(gene_cov90)
    return dict(ce=ce, c80=curve[79], c90=curve[89], c95=curve[94],
                gcov90=gc.mean(), under=(gc < 0.8).mean(), width=np.median(np.concatenate(widths)))


def main():
    names = sys.argv[1:] or ["current"]
    dirs = sorted(glob.glob(os.path.join(os.environ.get("DUMP", "."), "*_s[0-9]")))
    only = os.environ.get("ONLY")
    rows = []
    for d in dirs:
        if only and only not in d:
            continue
        folds = load(d)
        if folds is None:
            continue
        for n in names:
            name, _, arg = n.partition(":")
            kw = dict(a.split("=") for a in arg.split(",")) if arg else {}
            kw = {k: float(v) for k, v in kw.items()}
            r = score(folds, RULES[name], **kw)
            det = os.environ.get("DET")
            r["ce_det"] = score_detected(folds, RULES[name], **kw) if det else np.nan
            r.update(run=os.path.basename(d), rule=n)
            rows.append(r)
            print(f"{r['run']:22s} {n:28s} CE {r['ce']:.4f} cov {r['c80']:.3f}/{r['c90']:.3f}/{r['c95']:.3f} "
                  f"under {r['under']:.3f} width {r['width']:.2f} det {r['ce_det']:.4f}", flush=True)
    df = pd.DataFrame(rows)
    df["pair"] = df.run.str.replace(r"_s\d$", "", regex=True)
    print(df.groupby(["pair", "rule"])[["ce", "c80", "c90", "c95", "under", "width", "ce_det"]].mean().round(4).to_string())


if __name__ == "__main__":
    main()
