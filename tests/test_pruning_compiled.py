"""The compiled CPU loops of the mask update (lib/pruning/cpu_pass.py, radix_cpu.py): their
keys equal torch's scores bit for bit, their counts and commits equal independent numpy
computations, and through the Pruner they prune exactly the positions the torch routes
prune, on ordinary and adversarial inputs."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from lib.pruning import bracket, cpu_pass, prunable_weights, radix_cpu, score_registry, select
from lib.pruning.pruner import Pruner
from lib.pruning.schedule import sparsity_at
from lib.pruning.scores import EPS, score

NB = np.zeros(1, np.uint8)
NF = np.zeros(0, np.float32)


def _ordered(x):
    p = x.view(np.uint32)
    return np.where(p & 0x80000000, ~p, p | 0x80000000)


def _awkward(n, seed):
    """Weights and second moments over many decades, with zeros, subnormals, huge values,
    ties and pruned (w = 0, v = +inf) positions."""
    g = np.random.default_rng(seed)
    w = (g.standard_normal(n) * 10.0 ** g.uniform(-30, 10, n)).astype(np.float32)
    v = (g.random(n) * 10.0 ** g.uniform(-38, 38, n)).astype(np.float32)
    w[g.random(n) < 0.05] = 0.0
    w[g.random(n) < 0.05] = np.float32(1.5e-40)  # subnormal
    v[g.random(n) < 0.05] = 0.0
    w[: n // 10] = np.round(w[: n // 10] * 4) / 4
    dead = g.random(n) < 0.2
    w[dead], v[dead] = 0.0, np.inf
    return w, v, dead


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_keys_equal_torch_scores_bit_for_bit(seed):
    n = 200_003
    w, v, dead = _awkward(n, seed)
    m, _, _ = _awkward(n, seed + 10)
    m[dead] = 0.0
    tw, tm, tv = torch.from_numpy(w), torch.from_numpy(m), torch.from_numpy(v)
    for kind, ref in ((cpu_pass.BITTER7, score("bitter7", tw, tm, tv, step=3)), (cpu_pass.ABS, tw.abs()),
                      (cpu_pass.BITTER0, score("bitter0", tw, tm, tv, step=3))):
        rows = np.arange(n // 16, dtype=np.int64)
        out = np.empty(rows.size * 16, np.float32)
        cpu_pass.gather(kind, w, v, cpu_pass.DEAD_STATE, NB, False, EPS, score_registry.VMAX, rows, 16, out, m=m)
        assert np.array_equal(out.view(np.uint32), ref.numpy()[: out.size].view(np.uint32))
        # the band keys of a pass are the same numbers
        k = ref.numpy()
        lo, hi = np.float32(np.quantile(k, 0.3)), np.float32(np.quantile(k, 0.5))
        bits = np.zeros((n + 7) // 8, np.uint8)
        block = 1 << 15  # each block may hold a whole block of band entries
        slots = -(-n // block) * block
        pos, keys = np.empty(slots, np.int64), np.empty(slots, np.float32)
        below, band, _, new, over = cpu_pass.classify(kind, w, v, cpu_pass.DEAD_STATE, NB, False, lo, hi, EPS,
                                                      score_registry.VMAX, 0, bits, pos, keys, block, block, m=m)
        assert not over and below == int((k < lo).sum())
        want = np.flatnonzero((k >= lo) & (k < hi))
        assert np.array_equal(pos[:band], want) and np.array_equal(keys[:band], k[want])
        assert np.array_equal(np.unpackbits(bits, count=n, bitorder="little").astype(bool), (k < lo) & ~dead)
        assert new == int(((k < lo) & ~dead).sum())


def test_a_block_past_its_share_is_reported_and_a_one_block_retry_holds_it():
    n = 1 << 16
    keys = np.zeros(n, np.float32)
    keys[:5000] = 0.5  # all of the band in the first block
    bits = np.zeros(n // 8, np.uint8)
    pos, kk = np.empty(2 * 512, np.int64), np.empty(2 * 512, np.float32)
    got = cpu_pass.classify(cpu_pass.KEYS, keys, NF, cpu_pass.DEAD_NONE, NB, False, 0.25, 1.0,
                            EPS, score_registry.VMAX, 0, bits, pos, kk, 512)
    assert got[4] and got[1] == 5000  # overflowed, and says how many the band holds
    pos, kk = np.empty(5000, np.int64), np.empty(5000, np.float32)
    got = cpu_pass.classify(cpu_pass.KEYS, keys, NF, cpu_pass.DEAD_NONE, NB, False, 0.25, 1.0,
                            EPS, score_registry.VMAX, 0, bits, pos, kk, 5000, n)
    assert not got[4] and np.array_equal(pos[:5000], np.arange(5000))


@pytest.mark.parametrize("dead_mode", [cpu_pass.DEAD_NONE, cpu_pass.DEAD_STATE, cpu_pass.DEAD_BITS])
def test_digit_counts_equal_a_bincount_of_the_ordered_patterns(dead_mode):
    g = np.random.default_rng(3)
    n = 100_001
    x = (g.standard_normal(n) * 10.0 ** g.uniform(-5, 5, n)).astype(np.float32)
    x[::7] = 0.0
    dead = g.random(n) < 0.3
    v = np.where(dead, np.inf, 1.0).astype(np.float32)
    dead_bits = np.packbits(dead, bitorder="little")
    key = x + np.float32(0.0)
    if dead_mode != cpu_pass.DEAD_NONE:
        key = np.where(dead, np.float32(-np.inf), key)
    u = _ordered(key)
    h = np.zeros(2048, np.int64)
    nan, span = np.zeros(1, np.int64), cpu_pass.new_span()
    cpu_pass.digit_hist(cpu_pass.KEYS, x, v, dead_mode, dead_bits if dead_mode == cpu_pass.DEAD_BITS else NB,
                        EPS, score_registry.VMAX, 0, 0, 11, h, nan, span)
    assert np.array_equal(h, np.bincount(u >> 21, minlength=2048)) and nan[0] == 0
    assert list(span) == [u.min(), u.max()]
    prefix = int(u[1] >> 21)
    h2, span = np.zeros(2048, np.int64), cpu_pass.new_span()
    cpu_pass.digit_hist(cpu_pass.KEYS, x, v, dead_mode, dead_bits if dead_mode == cpu_pass.DEAD_BITS else NB,
                        EPS, score_registry.VMAX, prefix, 11, 11, h2, nan, span)
    inside = u[(u >> 21) == prefix]
    assert np.array_equal(h2, np.bincount((inside >> 10) & 2047, minlength=2048))
    assert list(span) == [inside.min(), inside.max()]
    x[5] = np.nan
    cpu_pass.digit_hist(cpu_pass.KEYS, x, v, cpu_pass.DEAD_NONE, NB, EPS, score_registry.VMAX, 0, 0, 11, h, nan,
                        cpu_pass.new_span())
    assert nan[0] == 1


@pytest.mark.parametrize("dead_mode", [cpu_pass.DEAD_NONE, cpu_pass.DEAD_STATE])
@pytest.mark.parametrize("shift", [0, 7, 19])
def test_window_counts_equal_a_bincount_inside_the_window_and_count_the_rest_below(dead_mode, shift):
    g = np.random.default_rng(5)
    n = 70_001
    x = (g.standard_normal(n) * 10.0 ** g.uniform(-3, 3, n)).astype(np.float32)
    dead = g.random(n) < 0.25
    v = np.where(dead, np.inf, 1.0).astype(np.float32)
    key = x + np.float32(0.0)
    if dead_mode != cpu_pass.DEAD_NONE:
        key = np.where(dead, np.float32(-np.inf), key)
    u = _ordered(key).astype(np.int64)
    start = int(np.median(u)) >> shift  # any start, not one aligned to a radix digit
    h, nan, span, below = np.zeros(2048, np.int64), np.zeros(1, np.int64), cpu_pass.new_span(), np.zeros(2, np.int64)
    cpu_pass.window_hist(cpu_pass.KEYS, x, v, dead_mode, NB, EPS, score_registry.VMAX, start, shift, 11, h, nan,
                         span, below)
    d = (u >> shift) - start
    inside = (d >= 0) & (d < 2048)
    assert np.array_equal(h, np.bincount(d[inside], minlength=2048))
    assert below[0] == int((d < 0).sum()) and below[1] == int(np.isneginf(key).sum())
    assert list(span) == [u[inside].min(), u[inside].max()] and nan[0] == 0


def test_a_window_from_the_sample_prunes_what_a_sort_prunes_whether_it_holds_the_cut_or_not():
    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(*[nn.Conv2d(64, 64, 3, bias=False) for _ in range(3)])
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    for count, window in ((5000, None), (5000, "hit"), (9000, "below"), (9000, "above")):
        src_w = w.abs()
        order = torch.sort(src_w).values
        cut = float(order[count - 1])
        windows = {None: None, "hit": (cut * 0.9, cut * 1.1), "below": (cut * 0.2, cut * 0.5),
                   "above": (cut * 2, cut * 3)}
        trial = copy.deepcopy(model)
        t_opt = torch.optim.AdamW(trial.parameters(), lr=1e-3, fused=True)
        t_pr = Pruner(t_opt, prunable_weights(trial), method="magnitude", target=0.9, warmup_end=0, ramp_end=10,
                      frequency=1, cap=512)
        t_pr.rep.prepare()
        from lib.pruning.pruner import _Buffers, _Keys
        led = select.Ledger()
        bufs = _Buffers(t_pr, led)
        src = _Keys(t_pr, range(len(t_pr.params)), bufs)
        sel = select.Selection(dead=[0] * 3)
        done = radix_cpu.compiled_radix(src, count, [0] * 3, sel, cap=512, digits=select.NARROW, ledger=led,
                                        finish=select._finish,
                                        compiled_pass=bracket._compiled_pass, window=windows[window])
        assert isinstance(done, select.Selection)
        got = torch.cat([p.detach().reshape(-1) == 0 for p in trial.parameters()])
        assert int(got.sum()) == count and bool((w.abs()[got] <= cut).all())
        if window == "hit":
            assert sel.passes == 2  # the window's counts, then the pass that collects the cut's bin


def test_ordered_patterns_round_trip_and_sort_like_the_floats():
    xs = [-np.inf, -3e38, -1.0, -1e-45, 0.0, 1e-45, 1e-30, 1.0, 3e38, np.inf]
    us = [cpu_pass.ordered(x) for x in xs]
    assert us == sorted(us) and len(set(us)) == len(us)
    assert [cpu_pass.from_ordered(u) for u in us] == [float(np.float32(x)) for x in xs]


@pytest.mark.parametrize("share", [0.001, 0.1])  # the byte-at-a-time and the word-at-a-time commit
def test_scatter_writes_exactly_the_set_bits(share):
    g = np.random.default_rng(4)
    n = 70_001
    hit = g.random(n) < share
    bits = np.zeros(-(-n // 64) * 8, np.uint8)
    bits[: (n + 7) // 8] = np.packbits(hit, bitorder="little")
    bits = bits[: (n + 7) // 8]
    a, b = np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32) + 1
    cpu_pass.scatter(bits, a, -1, b, -2, count=int(hit.sum()))
    assert np.array_equal(a, np.where(hit, -1, np.arange(n))) and np.array_equal(b, np.where(hit, -2, np.arange(n) + 1))


# -- through the Pruner: the compiled routes prune what the torch routes prune ------------------
def _model(kind, seed=2):
    torch.manual_seed(seed)
    if kind == "tiny":
        return nn.Sequential(*[nn.Linear(4, 4, bias=False) for _ in range(300)])
    if kind == "mixed":  # small tensors (one table) among large ones (a call each), odd sizes
        return nn.Sequential(*[nn.Linear(5 + i % 7, 3 + i % 5, bias=False) for i in range(40)],
                             nn.Linear(512, 300, bias=False), nn.Linear(3, 300, bias=False))
    if kind == "convs":
        m = nn.Sequential(nn.Conv2d(64, 64, 3, bias=False), nn.Conv2d(64, 128, 3, bias=False))
        with torch.no_grad():
            for p in m.parameters():
                p[..., 1] *= 3.0
        return m
    m = nn.Sequential(nn.Linear(512, 768, bias=False), nn.Linear(768, 512, bias=False))
    if kind == "ties":
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randint(-8, 8, p.shape).float() / 256)
    if kind == "zeros":
        with torch.no_grad():
            for p in m.parameters():
                p.masked_fill_(torch.rand(p.shape) < 0.3, 0.0)
    if kind == "silent":  # 30% of weights 0, and their gradients always 0 (_masks): they stay 0
        with torch.no_grad():
            for p in m.parameters():
                p.masked_fill_(_silent(p), 0.0)
    return m


def _silent(p):
    return torch.rand(p.shape, generator=torch.Generator().manual_seed(5)) < 0.3


def _masks(kind, opt_name, method, compiled, monkeypatch, target=0.9, **kw):
    monkeypatch.setattr(bracket, "FUSED", compiled)
    monkeypatch.setattr(select, "COMPILED", compiled)
    model = _model(kind)
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True, amsgrad=opt_name == "amsgrad")
    pr = Pruner(opt, prunable_weights(model), target=target, warmup_end=2, ramp_end=12, frequency=5, **method, **kw)
    gen = torch.Generator().manual_seed(9)
    out, routes = [], []
    for t in range(1, 13):
        for p in model.parameters():
            g = torch.randn(p.shape, generator=gen) * 1e-3
            if kind == "ties":
                g = torch.round(g * 1e3) * 1e-3  # equal moments too
            if kind == "silent":  # the same 30% of gradients always exactly 0: bitter0 scores them 0
                g = g.masked_fill(_silent(p), 0.0)
            p.grad = g
        pr.before_update()
        opt.step()
        if t in (2, 7, 12):
            pr.update(t)
            assert pr.pruned_count() == round(sparsity_at(t, warmup_end=2, ramp_end=12, final=target) * pr.total)
            out.append([copy.deepcopy(pr.rep.dead_mask(j)) for j in range(len(pr.params))])
            for j, p in enumerate(pr.params):  # what pruning writes: weight 0, and the optimizer's marks
                d = out[-1][j]
                if d is None:
                    continue
                d = d.reshape(p.shape)
                st = opt.state[p]
                assert bool((p.detach()[d] == 0).all())
                for k in ("exp_avg_sq", "max_exp_avg_sq"):
                    if k in st:
                        assert bool(torch.isinf(st[k][d]).all())
                if st.get("momentum_buffer") is not None:
                    assert bool((st["momentum_buffer"][d] == 0).all())
            routes.append([(s.bracketed, s.collected) for s in pr.selections if s.passes])
    monkeypatch.undo()
    return out, routes


CASES = [
    ("plain", "adamw", dict(method="state", variant="bitter7"), {}),
    ("plain", "adamw", dict(method="state", variant="bitter7"), dict(sample=1 << 15, band_cap=1 << 16, chunk=1 << 14)),
    ("ties", "adamw", dict(method="state", variant="bitter7"), dict(cap=256)),
    ("zeros", "adamw", dict(method="magnitude"), {}),
    ("zeros", "sgd", dict(method="magnitude"), {}),
    ("convs", "adamw", dict(method="movement"), {}),
    ("plain", "adamw", dict(method="state", variant="bitter0"), {}),
    ("tiny", "adamw", dict(method="state", variant="bitter7"), {}),
    ("plain", "adamw", dict(method="state", variant="bitter7", scope="layer"), {}),
]


@pytest.mark.parametrize("kind,opt_name,method,kw", CASES,
                         ids=[f"{k}-{o}-{m.get('variant', m['method'])}-{i}" for i, (k, o, m, _) in enumerate(CASES)])
def test_compiled_routes_prune_what_the_torch_routes_prune(kind, opt_name, method, kw, monkeypatch):
    fast, _ = _masks(kind, opt_name, method, True, monkeypatch, **kw)
    slow, _ = _masks(kind, opt_name, method, False, monkeypatch, **kw)
    for a, b in zip(fast, slow):
        assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("kind,opt_name,method,sample", [
    ("silent", "adamw", dict(method="state", variant="bitter0"), None),
    ("silent", "sgd", dict(method="magnitude"), None),
    ("silent", "adamw", dict(method="magnitude"), None),
    ("silent", "adamw", dict(method="state", variant="bitter0"), 0),  # no sample: the digits find the ties
    ("silent", "sgd", dict(method="magnitude"), 0)])
def test_massive_ties_take_the_compiled_tie_pass_and_prune_what_the_torch_route_prunes(kind, opt_name, method, sample,
                                                                                      monkeypatch):
    calls = []
    for name in ("tie_pass", "tie_items"):  # a tensor at a time, or all of them through the table
        f = getattr(cpu_pass, name)
        monkeypatch.setattr(cpu_pass, name, lambda *a, _f=f, _n=name, **k: calls.append(_n) or _f(*a, **k))
    # to 20%: the cut falls among the 30% equal scores (0), more of them than `cap`
    fast, _ = _masks(kind, opt_name, method, True, monkeypatch, target=0.2, cap=256, sample=sample)
    assert "tie_items" in calls  # float32 tensors: all through the table
    slow, _ = _masks(kind, opt_name, method, False, monkeypatch, target=0.2, cap=256, sample=sample)
    for a, b in zip(fast, slow):
        assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("kind,opt_name,method", [("tiny", "sgd", dict(method="magnitude")),
                                                  ("tiny", "amsgrad", dict(method="state", variant="bitter7")),
                                                  ("tiny", "adamw", dict(method="state", variant="bitter0")),
                                                  ("tiny", "adamw", dict(method="movement")),
                                                  ("mixed", "adamw", dict(method="state", variant="bitter7")),
                                                  ("mixed", "sgd", dict(method="magnitude"))])
def test_small_tensors_read_through_one_table_prune_what_the_torch_routes_prune(kind, opt_name, method,
                                                                               monkeypatch):
    calls = {}
    for name in ("classify_items", "hist_items", "scatter_items"):
        def counted(*a, _f=getattr(cpu_pass, name), _n=name, **k):
            calls[_n] = calls.get(_n, 0) + 1
            return _f(*a, **k)
        monkeypatch.setattr(cpu_pass, name, counted)
    fast, _ = _masks(kind, opt_name, method, True, monkeypatch)
    assert calls.get("classify_items") and calls.get("scatter_items")
    slow, _ = _masks(kind, opt_name, method, False, monkeypatch)
    for a, b in zip(fast, slow):
        assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b))


def test_the_compiled_radix_takes_the_small_models():
    assert radix_cpu.hist_bytes(select.NARROW) < radix_cpu.hist_bytes(select.WIDE)
    _, routes = _masks("convs", "adamw", dict(method="magnitude"), True, pytest.MonkeyPatch())
    assert sum(map(len, routes)) >= 2 and all(not b and c for r in routes for b, c in r)  # no sample, collected


def test_the_compiled_loops_leave_torchs_thread_count_alone():
    """numba's OpenMP pool sets every OpenMP user's thread count when it starts; a run on
    CONFIG_CPU_THREADS = 1 must stay on one thread (its results depend on it)."""
    import subprocess
    import sys
    code = ("import torch, torch.nn as nn; torch.set_num_threads(1)\n"
            "from lib.pruning import prunable_weights\n"
            "from lib.pruning.pruner import Pruner\n"
            "m = nn.Sequential(nn.Linear(64, 64, bias=False))\n"
            "opt = torch.optim.AdamW(m.parameters())\n"
            "pr = Pruner(opt, prunable_weights(m), method='magnitude', target=0.5, warmup_end=1, ramp_end=2)\n"
            "pr.update(2)\n"
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1"


# -- the band's resolve (resolve_cpu) against select._resolve and a sort ------------------------
@pytest.mark.parametrize("case", ["spread", "ties", "signs", "few"])
def test_kth_key_finds_the_rank_and_counts_the_keys_below_and_equal(case):
    g = np.random.default_rng(7)
    n = {"few": 50, "spread": 100_003}.get(case, 40_000)
    if case == "ties":
        x = np.round(g.random(n) * 30).astype(np.float32) / 7
    elif case == "signs":
        x = (g.standard_normal(n) * 10.0 ** g.integers(-30, 30, n)).astype(np.float32)
        x[:300] = -np.inf
        x[300:600] = np.inf
    else:
        x = g.random(n).astype(np.float32)
    s = np.sort(x)
    for k in (1, 2, n // 3, n // 2 + 1, n - 1, n):
        out = np.zeros(4, np.int64)
        cpu_pass.kernels()._kth_key(x.copy(), k, out)
        tau = np.float32(cpu_pass.from_ordered(int(out[0])))
        assert tau == s[k - 1] and out[3] == 0
        assert out[1] == np.count_nonzero(x < tau) and out[2] == np.count_nonzero(x == tau)
    x[5] = np.nan
    out = np.zeros(4, np.int64)
    cpu_pass.kernels()._kth_key(x.copy(), 1, out)
    assert out[3] == 1


class _BandSource:
    def __init__(self, sizes):
        self.sizes = sizes
        self.offsets = [0, *np.cumsum(sizes)[:-1].tolist()]


@pytest.mark.parametrize("levels", [None, 40, 3])  # distinct keys; ties at the cut; mostly ties
def test_band_resolve_prunes_what_select_resolve_prunes(levels):
    from lib.pruning import resolve_cpu
    g = np.random.default_rng(11)
    sizes, chunk = [70_000, 5_000, 130_000], 16_384
    src = _BandSource(sizes)
    band, old, calls = resolve_cpu.Band(), [], []
    for i, n in enumerate(sizes):
        for a in range(0, n, 50_000):  # a tensor's ranges, a call each
            b = min(n, a + 50_000)
            pos = np.sort(g.choice(np.arange(a, b), size=(b - a) // 9, replace=False)).astype(np.int64)
            keys = g.random(pos.size).astype(np.float32)
            if levels:
                keys = (np.floor(keys * levels) / levels).astype(np.float32)
            band.add(i, a, b, pos, keys, chunk)
            calls.append((i, a, b, pos, keys))
            cuts = np.searchsorted(pos, np.arange(a - a % chunk + chunk, b, chunk))
            for pp, kk in zip(np.split(pos, cuts), np.split(keys, cuts)):
                if pp.size:
                    old.append((i, torch.from_numpy(pp.copy()), torch.from_numpy(kk.copy())))
    r = band.size * 3 // 7
    sel_old, sel_new = select.Selection(), select.Selection()
    chosen_old = [set() for _ in sizes]
    select._resolve(src, sel_old, old, r, {}, drop=lambda j, p: chosen_old[j].update(p.tolist()))
    byte_at = [0, *np.cumsum([-(-n // 64) * 8 for n in sizes])[:-1].tolist()]
    bits = np.zeros(sum(-(-n // 64) * 8 for n in sizes), np.uint8)
    done = resolve_cpu.resolve(src, sel_new, band, r, bits, byte_at, select.Ledger())
    for i, n in enumerate(sizes):
        got = np.flatnonzero(np.unpackbits(bits[byte_at[i]:byte_at[i] + -(-n // 8)], bitorder="little")[:n])
        assert set(got.tolist()) == chosen_old[i] and done[i] == len(chosen_old[i])
    assert (sel_new.tau, sel_new.ties, sel_new.tie_drops) == (sel_old.tau, sel_old.ties, sel_old.tie_drops)
    assert sum(done) == r and (sel_new.ties > sel_new.tie_drops if levels else sel_new.ties == 1)


# -- pieces taken in turn: one call for all tensors (classify_items, scatter_items) -------------
def test_scatter_items_writes_exactly_the_set_bits_of_every_row():
    g = np.random.default_rng(6)
    sizes = [70_001, 64, 1_000, 200_003]
    byte_at = [0, *np.cumsum([-(-n // 64) * 8 for n in sizes])[:-1].tolist()]
    bits = np.zeros(sum(-(-n // 64) * 8 for n in sizes), np.uint8)
    hits, tgts, masks, before = [], [], [], []
    for n, b0, share in zip(sizes, byte_at, [0.02, 1.0, 0.5, 0.001]):
        hit = g.random(n) < share
        bits[b0:b0 + (n + 7) // 8] = np.packbits(hit, bitorder="little")
        hits.append(hit)
        tgts.append((np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32) + 7))
        old = g.integers(0, 256, (n + 7) // 8).astype(np.uint8)
        old[-1] &= np.uint8((1 << (n % 8 or 8)) - 1)
        masks.append(old.copy())
        before.append(old)
    rows = np.array([[b0, n] for b0, n in zip(byte_at, sizes)], np.int64)
    targets = np.array([[a.ctypes.data, b.ctypes.data] for a, b in tgts], np.int64)
    targets[1, 1] = 0  # no second target for this row
    patterns = np.array([[-1, -2]] * len(sizes), np.int32)
    mask_at = np.array([m.ctypes.data for m in masks], np.int64)
    mask_at[2] = 0
    cpu_pass.scatter_items(bits, rows, cpu_pass.items_of(sizes, piece=1 << 12), targets, patterns, mask_at, 2)
    for r, (n, hit) in enumerate(zip(sizes, hits)):
        a, b = tgts[r]
        assert np.array_equal(a, np.where(hit, -1, np.arange(n)))
        assert np.array_equal(b, np.arange(n) + 7 if r == 1 else np.where(hit, -2, np.arange(n) + 7))
        want = before[r] if r == 2 else before[r] | np.packbits(hit, bitorder="little")
        assert np.array_equal(masks[r], want)


def test_pieces_whose_band_outgrows_their_slots_are_read_again_and_prune_what_the_torch_route_prunes(monkeypatch):
    calls = []
    slots = bracket.piece_slots

    def tight(tab, band_frac):  # 8 slots a piece: every piece of a large tensor overflows
        items = slots(tab, band_frac)
        items[:, 4] = np.minimum(items[:, 4], 8)
        items[:, 3] = np.cumsum(items[:, 4]) - items[:, 4]
        return items
    monkeypatch.setattr(bracket, "piece_slots", tight)
    classify_items = cpu_pass.classify_items

    def counted(tab, items, *a, **k):
        calls.append(items.shape[0])
        return classify_items(tab, items, *a, **k)
    monkeypatch.setattr(cpu_pass, "classify_items", counted)
    fast, routes = _masks("plain", "adamw", dict(method="state", variant="bitter7"), True, monkeypatch,
                          sample=1 << 15, band_cap=1 << 16, chunk=1 << 14)
    updates = sum(1 for r in routes if r)
    # each update read its pieces twice (calls of one piece: the loops' warm-up), still one bracket
    assert updates and len([c for c in calls if c > 1]) == 2 * updates and all(b for r in routes for b, _ in r)
    slow, _ = _masks("plain", "adamw", dict(method="state", variant="bitter7"), False, monkeypatch,
                     sample=1 << 15, band_cap=1 << 16, chunk=1 << 14)
    for a, b in zip(fast, slow):
        assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("opt_name,method", [("adamw", dict(method="state", variant="bitter7")),
                                             ("sgd", dict(method="magnitude")),
                                             ("adamw", dict(method="state", variant="bitter0"))])
def test_the_sample_read_through_the_table_equals_torchs_keys(opt_name, method, monkeypatch):
    from lib.pruning import select
    from lib.pruning.pruner import _Buffers, _Keys
    model = _model("mixed")
    opt = (torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9) if opt_name == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True))
    pr = Pruner(opt, prunable_weights(model), target=0.9, warmup_end=1, ramp_end=4, frequency=1, **method)
    for t in range(1, 4):
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        pr.before_update()
        opt.step()
        pr.after_update(t)  # some weights pruned: their keys show as pruned
    samples, calls = [], []
    gather_table = cpu_pass.gather_table
    monkeypatch.setattr(cpu_pass, "gather_table", lambda *a, **k: calls.append(a[1].size) or gather_table(*a, **k))
    for fused in (True, False):
        monkeypatch.setattr(bracket, "FUSED", fused)
        led = select.Ledger()
        src = _Keys(pr, range(len(pr.params)), _Buffers(pr, led))
        keys, _ = bracket._sample(src, 12345, led, 1 << 12)
        samples.append(keys)
    assert torch.equal(samples[0], samples[1]) and samples[0].numel() == 1 << 12
    assert calls and calls[0] > 0 and bool((samples[0] == 0).any())  # pruned weights among them


@pytest.mark.parametrize("n,k", [(10, 3), (1000, 999), (50_000, 123), (50_000, 49_000), (7, 7), (5, 0)])
def test_select_smallest_puts_the_k_smallest_first(n, k):
    g = np.random.default_rng(n + k)
    a = g.choice(1 << 62, size=n, replace=False).astype(np.int64)
    b = a.copy()
    cpu_pass.kernels()._select_smallest(b, k)
    assert sorted(b[:k].tolist()) == np.sort(a)[:k].tolist() and sorted(b.tolist()) == np.sort(a).tolist()


_WARM_CHECK = """
import json, sys
import numba, pytest
sys.path[:0] = [sys.argv[1], "."]
import test_pruning_compiled as T
from lib.pruning import cpu_pass

def loaded():
    k = cpu_pass.kernels()
    return {n: len(d.signatures) for n in dir(k) if isinstance(d := getattr(k, n), numba.core.registry.CPUDispatcher)}

if sys.argv[2] == "check":
    cpu_pass.warm()
before = loaded()
for kind, opt_name, method, kw in T.CASES + [("silent", "adamw", dict(method="state", variant="bitter0"),
                                              dict(target=0.2, cap=256))]:
    T._masks(kind, opt_name, method, True, pytest.MonkeyPatch(), **kw)
after = loaded()
print(json.dumps({n: after[n] - before.get(n, 0) for n in after if after[n] != before.get(n, 0)}))
"""


def test_warm_loads_every_compiled_loop_the_mask_updates_call(tmp_path):
    """Loading a loop from numba's cache takes tens of milliseconds, the first call of each
    version (argument types and layouts) in a process: warm() must load the very versions
    the updates call, or the first update of a run pays for it (a strided column passed
    where warm() passed a contiguous array once cost one update 50 ms)."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    script = tmp_path / "warm_check.py"
    script.write_text(_WARM_CHECK)
    root, tests = Path(__file__).resolve().parents[1], str(Path(__file__).resolve().parent)
    for mode in ("fill", "check"):  # the first run compiles what the cache lacks
        out = subprocess.run([sys.executable, str(script), tests, mode], cwd=root, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_at_counts_and_keeps_what_numpy_compares_give(seed):
    g = np.random.default_rng(seed)
    flat = np.round(g.standard_normal(50_000) * 8).astype(np.float32) / 8  # many ties
    flat[g.random(flat.size) < 0.01] = np.nan
    flat[g.random(flat.size) < 0.01] = np.inf
    flat[g.random(flat.size) < 0.01] = -np.inf
    for v_lo, v_hi in ((-0.5, 0.25), (-np.inf, 0.0), (0.0, np.inf), (1.0, 1.0)):
        c_lt, c_le, sub = bracket._split_at(flat, v_lo, v_hi)
        assert c_lt == np.count_nonzero(flat < np.float32(v_lo))
        assert c_le == np.count_nonzero(flat <= np.float32(v_lo))
        want = flat[(flat > np.float32(v_lo)) & (flat < np.float32(v_hi))]
        assert np.array_equal(sub.view(np.uint32), want.view(np.uint32))
