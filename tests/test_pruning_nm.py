"""N:M semi-structured masks: the selection against a greedy reference, the exact pattern at the
end of the ramp for every method and score, monotone masks, refusals at configuration time."""
import dataclasses

import pytest
import torch
from torch import nn

from lib import optimizers
from lib.pruning import is_update_step, nm, sparsity_at
from lib.pruning.scores import VARIANTS
from test_matrix_fakes import stem


def greedy(keys, dead, n, m, goal):
    """Independent reference: walk all live weights by (key, position), take one while its group has room."""
    k, d = keys.reshape(-1).tolist(), dead.reshape(-1).tolist()
    out = list(d)
    pruned_in = [sum(d[g * m:(g + 1) * m]) for g in range(len(d) // m)]
    need = goal - sum(d)
    for key, pos in sorted((k[i], i) for i in range(len(k)) if not d[i]):
        if need == 0:
            break
        if pruned_in[pos // m] < m - n:
            out[pos] = True
            pruned_in[pos // m] += 1
            need -= 1
    return torch.tensor(out).view_as(dead)


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8), (1, 2)])
@pytest.mark.parametrize("seed", range(4))
def test_select_matches_greedy_reference(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    groups = 37
    keys = torch.randint(0, 5, (groups, m), generator=g).float()  # many ties
    dead = torch.zeros(groups, m, dtype=torch.bool)
    for goal in sorted(torch.randint(0, groups * (m - n) + 1, (3,), generator=g).tolist()) + [groups * (m - n)]:
        goal = max(goal, int(dead.sum()))
        got = nm.select(keys, dead, n, m, goal)
        assert torch.equal(got, greedy(keys, dead, n, m, goal))
        assert int(got.sum()) == goal and bool((got | ~dead).all())  # monotone: every dead stays dead
        dead = got
        keys = keys + torch.randn(groups, m, generator=g)  # scores move between updates
    assert (dead.sum(dim=1) == m - n).all()


def test_select_refuses_more_than_the_pattern_allows():
    with pytest.raises(ValueError, match="fit the 2:4 pattern"):
        nm.select(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.bool), 2, 4, 7)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3)          # input size 4 x 3 x 3 = 36
        self.fc1 = nn.Linear(8 * 4 * 4, 12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


CASES = ([("sgd", "magnitude", None), ("adamw", "magnitude", None), ("sgd", "movement", None),
          ("adamw", "movement", None)] + [("adamwprune", "state", v) for v in VARIANTS])
SCHEDULE = dict(warmup_end=2, ramp_end=12, frequency=3)


def groups_of(w, m):
    return w.detach().contiguous().view(w.shape[0], -1).view(-1, m)


@pytest.mark.parametrize("optimizer, method, variant", CASES)
def test_every_score_ends_exactly_n_of_m_and_stays_monotone(optimizer, method, variant):
    torch.manual_seed(0)
    net = Net()
    if optimizer == "sgd":
        net = net.to(memory_format=torch.channels_last)  # masks live in memory order: layout must not matter
    opt = optimizers.create(optimizer, net, lr=1e-2, weight_decay=0.0, pruning=method, variant=variant,
                            target_sparsity=0.5, nm="2:4", **SCHEDULE)
    prunable = [p for _, p in opt.prunable]
    total = sum(p.numel() for p in prunable)
    before = [torch.zeros(p.shape, dtype=torch.bool) for p in prunable]
    expected = 0
    x, y = torch.randn(16, 4, 6, 6), torch.randint(0, 3, (16,))
    for t in range(1, 15):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        now = [p.detach() == 0 for p in prunable]
        assert all(bool((b <= a).all()) for a, b in zip(now, before)), f"a pruned weight came back at step {t}"
        if is_update_step(t, **SCHEDULE):
            expected = round(sparsity_at(t, warmup_end=2, ramp_end=12, final=0.5) * total)
        assert opt.pruner.pruned_count() == expected
        for p in prunable:  # no group ever beyond M - N pruned
            assert int((groups_of(p, 4) == 0).sum(dim=1).max()) <= 2
        before = now
    for p in prunable:
        assert ((groups_of(p, 4) != 0).sum(dim=1) == 2).all()
    opt.pruner.recount()
    assert opt.pruner.pruned_count() == total // 2


def test_layer_with_input_size_not_a_multiple_of_m_is_refused():
    from lenet5.model import LeNet5

    with pytest.raises(ValueError, match=r"conv1.weight has input size 25 \(1x5x5\), not a multiple of M=4"):
        optimizers.create("adamwprune", LeNet5(), lr=1e-3, weight_decay=0.0, target_sparsity=0.5, nm="2:4",
                          **SCHEDULE)


@pytest.mark.parametrize("pattern, target, message", [("2:4", 0.9, "end at exactly 50% sparsity"),
                                                       ("4:4", 0.0, "1 <= N < M"), ("2-4", 0.5, "form N:M")])
def test_bad_pattern_or_target_is_refused(pattern, target, message):
    with pytest.raises(ValueError, match=message):
        optimizers.create("adamwprune", Net(), lr=1e-3, weight_decay=0.0, target_sparsity=target or 0.5,
                          nm=pattern, **SCHEDULE) if target else nm.parse(pattern)


def test_config_reaches_the_run_and_names_it():
    from lib.configuration import config
    from lib.configuration.resolve import optimizer_kwargs, plan
    from lib.training.task import BadInput
    from test_matrix.expand import expand

    base = config.from_defconfig("gpt2-tiny-cpu")
    plain = expand(base)[0]
    assert "nm" not in plain.to_dict() and "nm" not in plain.run_id
    kconf = config.load_kconfig(config.defconfig_path("gpt2-tiny-cpu"))
    kconf.syms["PRUNING_MASK_NM"].set_value(2)  # as menuconfig would: N and M appear at 2 and 4
    spec = expand(config.Config(config.typed_values(kconf)))[0]
    assert spec.nm == "2:4" and stem(spec.run_id).endswith("s50-nm2of4-seed1")
    assert type(spec).from_dict(spec.to_dict()) == spec
    hp = plan(spec, train_size=None, world_size=1, device_type="cpu", amp=None, compile=False,
              metric="perplexity", printer=lambda _l: None)
    assert optimizer_kwargs(hp)["nm"] == "2:4"
    ninety = dataclasses.replace(spec, target_sparsity=0.9)
    with pytest.raises(BadInput, match="end at exactly 50% sparsity"):
        plan(ninety, train_size=None, world_size=1, device_type="cpu", amp=None, compile=False,
             metric="perplexity", printer=lambda _l: None)


def test_gpt2_run_with_2_4_masks_trains_exports_and_is_2_4(tmp_path, monkeypatch):
    """Through the engine: a tiny GPT-2 with 2:4 masks ends exactly 2:4 in its exported weights."""
    from lib.lifecycle import rundir
    from lib.export.sparse_bench import is_2_4
    from lib.export.write import export
    from safetensors.torch import load_file
    from tests.test_gpt2_train import gpt2_spec, start

    monkeypatch.setenv("KNLP_NUM_THREADS", "1")
    spec = gpt2_spec(tmp_path, PRUNING_MASK_NM="y")
    assert spec.nm == "2:4"
    code, run_dir = start(tmp_path, spec)
    assert code == 0, (run_dir / rundir.LOG).read_text()[-500:]
    record = export(run_dir, "last", out=lambda _l: None)
    dense = load_file(str(run_dir / "export" / "model.safetensors"))
    layers = [n for n in dense if n.endswith(("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                                              "mlp.c_proj.weight"))]
    assert len(layers) == 8 and record["sparsity"] == 0.5
    for name in layers:
        assert ((dense[name].view(-1, 4) != 0).sum(dim=1) <= 2).all() and is_2_4(dense[name])


def test_layout_helpers_map_memory_order_to_logical_and_back():
    from lib.pruning.layout import to_logical, to_memory_order
    from lib.pruning.masks import flat

    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5).to(memory_format=torch.channels_last)
    logical = to_logical(flat(x), x)
    assert torch.equal(logical, x) and logical.is_contiguous()
    assert torch.equal(to_memory_order(logical, x), flat(x))
    assert not torch.equal(flat(x), x.reshape(-1))  # the layouts really differ


@pytest.mark.parametrize("defconfig, sparsity_symbols, message", [
    ("lenet5-sample-bitter7", {"SPARSITY_50": 2, "SPARSITY_90": 0}, r"conv1.weight has input size 25 \(1x5x5\)"),
    ("resnet18-cifar10-bitter7", {"SPARSITY_50": 2, "SPARSITY_90": 0}, r"conv1.weight has input size 27 \(3x3x3\)"),
    ("gpt2-tiny-cpu", {"SPARSITY_90": 2}, "end at exactly 50% sparsity")])
def test_misfit_is_refused_while_the_config_is_expanded(defconfig, sparsity_symbols, message):
    from lib.configuration import config
    from test_matrix.expand import expand

    kconf = config.load_kconfig(config.defconfig_path(defconfig))
    for name, value in {"PRUNING_MASK_NM": 2, **sparsity_symbols}.items():
        kconf.syms[name].set_value(value)
    with pytest.raises(config.ConfigError, match=message):
        expand(config.Config(config.typed_values(kconf)))
