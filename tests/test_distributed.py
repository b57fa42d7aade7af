"""Data parallelism on CPU: two gloo processes (torch.multiprocessing spawn) against one.

Dropout is 0 in the training tests: each rank draws dropout masks from its own RNG stream
(`seed_per_rank`) for its rows, so with dropout the 2-process run is a different (equally
valid) random draw, not the same computation. Everything else — data order, cloze masks, loss
normalisation — is built to be independent of the number of processes.
"""

import json
import socket
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from recengine import checkpoint, distributed
from recengine.data.sequences import Sequences
from recengine.data.split import EvalSet
from recengine.evaluate import evaluate, model_scorer
from recengine.hookspecs import hookimpl
from recengine.plugins import load_registry
from recengine.recipe import load_recipe
from recengine.runs import RunDir
from recengine.training import train

from .conftest import TINY_RECIPE

# 80 users, batch 11: 7 full batches and one of 3 rows (ranks get 1 and 2); dropout off (see above).
OVERRIDES = ["train.batch_size=11", "train.epochs=2", "train.patience=10", "model.dropout=0.0",
             "model.attention_dropout=0.0", "eval.batch_size=7"]


class LossRecorder:
    """A monitor plugin that appends every logged training loss to a JSON-lines file."""

    def __init__(self, path: Path):
        self.path = path

    @hookimpl
    def register_monitors(self, register):
        path = self.path

        class Monitor:
            def log_scalars(self, step, values):
                if "train/loss" in values:
                    with open(path, "a") as f:
                        f.write(json.dumps([step, values["train/loss"]]) + "\n")

            def log_hparams(self, hparams, metrics):
                pass

            def close(self):
                pass

        register("record", lambda options, log_dir: Monitor())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_rank(rank: int, world_size: int, port: int, job, *args) -> None:
    import os

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    job(*args)
    # The job is done and its files are written. Skip interpreter teardown: once in a fresh-clone
    # run a rank that had finished its FSDP2 job aborted there ("terminate called without an active
    # exception", SIGABRT), as gloo's worker threads can when objects holding their work outlive
    # the interpreter (pytorch PR 179291). That is torch's teardown, not what the tests check.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawn(job, *args, world_size: int = 2) -> None:
    mp.spawn(_as_rank, args=(world_size, _free_port(), job, *args), nprocs=world_size, join=True)


# --- evaluation ---------------------------------------------------------------------------


def _eval_set(users: int = 101, items: int = 40, seed: int = 0) -> EvalSet:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 9, size=users)
    seqs = Sequences(rng.integers(1, items + 1, size=lengths.sum()).astype(np.int32),
                     np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), items)
    held = rng.integers(1, 4, size=users)  # 1-3 held-out items per user, so Recall@K differs from HR@K
    held_out = Sequences(rng.integers(1, items + 1, size=held.sum()).astype(np.int32),
                         np.concatenate([[0], np.cumsum(held)]).astype(np.int64), items)
    return EvalSet(seqs, held_out.items[held_out.offsets[:-1]].astype(np.int64), np.arange(users), held_out)


def _negatives():
    from recengine.evaluate import draw_negatives

    ev = _eval_set()
    return draw_negatives(ev.inputs, ev.users, 10, "uniform", seed=1)


def _model(items: int = 40):
    from recengine_plugins.bert4rec import bert4rec

    torch.manual_seed(0)
    return bert4rec(items, hidden=16, layers=1, heads=2, max_len=10).eval()


def _evaluate_both(batch_size: int, dist=distributed.Single()) -> list[dict[str, float]]:
    """Full-ranking and sampled-negative metrics of the tiny model."""
    model = _model()
    kw = dict(batch_size=batch_size, dist=dist)
    return [evaluate(model_scorer(model), _eval_set(), model.max_len, model.mask_token, **kw),
            evaluate(model_scorer(model), _eval_set(), model.max_len, model.mask_token, negatives=_negatives(), **kw)]


def _evaluate_job(out: Path, batch_size: int) -> None:
    dist = distributed.setup("ddp")
    metrics = _evaluate_both(batch_size, dist)
    if dist.is_main:
        out.write_text(json.dumps(metrics))
    dist.close()


@pytest.mark.slow
def test_metrics_on_two_processes_equal_one_process_exactly(tmp_path):
    # 101 users in batches of 8: 13 batches, 7 on rank 0 and 6 on rank 1, the last one partial.
    single = _evaluate_both(8)
    assert "coverage@10" in single[0] and single[0]["recall@10"] != single[0]["hr@10"]
    _spawn(_evaluate_job, tmp_path / "two.json", 8)
    assert json.loads((tmp_path / "two.json").read_text()) == single  # bit for bit: no tolerance


def _dropout_stream_job(out: Path) -> None:
    dist = distributed.setup("ddp")
    torch.manual_seed(0)  # what `train` does first, on every rank: the same initial weights
    dist.seed_per_rank(0)
    draws = [torch.empty(8) for _ in range(dist.world_size)]
    torch.distributed.all_gather(draws, torch.rand(8))
    if dist.is_main:
        out.write_text(json.dumps([d.tolist() for d in draws]))
    dist.close()


@pytest.mark.slow
def test_each_rank_draws_its_own_dropout_masks(tmp_path):
    _spawn(_dropout_stream_job, tmp_path / "draws.json")
    rank0, rank1 = json.loads((tmp_path / "draws.json").read_text())
    assert rank0 != rank1
    torch.manual_seed(0)
    expected = torch.rand(8)
    torch.manual_seed(0)
    distributed.Single().seed_per_rank(0)  # one process: its stream goes on untouched
    assert torch.equal(torch.rand(8), expected)


def _checkpoint_state_job(out: Path) -> None:
    dist = distributed.setup("ddp")
    model = _model()
    sizes = [None] * dist.world_size
    torch.distributed.all_gather_object(sizes, len(dist.model_state(model, model.state_dict().keys())))
    if dist.is_main:
        out.write_text(json.dumps(sizes))
    dist.close()


@pytest.mark.slow
def test_under_ddp_only_rank_0_gathers_the_weights_it_writes(tmp_path):
    # A checkpoint with ema_decay copies the state it is given to the host: the other ranks write
    # nothing, so they get nothing to copy (1.7 GB per rank and checkpoint at 430M otherwise).
    _spawn(_checkpoint_state_job, tmp_path / "sizes.json")
    assert json.loads((tmp_path / "sizes.json").read_text()) == [len(_model().state_dict()), 0]


def test_evaluation_batches_are_dealt_once_and_padded_only_in_lockstep():
    ddp, fsdp = distributed.Distributed("ddp", 1, 3, 1), distributed.Distributed("fsdp2", 2, 3, 2)
    assert ddp.my_batches(7) == [1, 4]
    assert fsdp.my_batches(7) == [2, 5, None]  # a thrown-away forward: rank 0 has 3 batches
    dealt = sorted(b for r in range(3) for b in distributed.Distributed("ddp", r, 3, r).my_batches(7))
    assert dealt == list(range(7))


def _sharded_epochs(batches_for, world_size: int):
    """Per global batch: the untrimmed rows of every rank (left-padded to max_len) and loss scales."""
    out = []
    ranks = [batches_for(r, world_size) for r in range(world_size)]
    for parts in zip(*(b.epoch(0) for b in ranks)):
        pad = lambda t: torch.nn.functional.pad(t, (ranks[0].max_len - t.shape[1], 0))
        out.append((parts, [pad(p.inputs) for p in parts], [pad(p.labels) for p in parts]))
    return out


@pytest.mark.parametrize("task", ["cloze", "next_item"])
def test_ranks_split_each_global_batch_and_scale_their_losses_to_its_mean(task):
    from recengine.data.batching import ClozeBatches, IGNORE
    from recengine.data.next_item import NextItemBatches

    seqs = _eval_set(users=23).inputs
    make = {"cloze": lambda: ClozeBatches(seqs, 10, 8, 0.3, seed=3), "next_item": lambda: NextItemBatches(seqs, 10, 8, seed=3)}[task]

    def batches_for(rank, world):
        b = make()
        b.shard(rank, world)
        return b

    whole = list(make().epoch(0))
    assert whole[0].loss_scale is None  # one process: untouched, bit-identical loss
    for world in (2, 3):
        sharded = _sharded_epochs(batches_for, world)
        assert len(sharded) == len(whole) == 3
        for single, (parts, inputs, labels) in zip(whole, sharded):
            pad = lambda t: torch.nn.functional.pad(t, (10 - t.shape[1], 0))
            assert torch.equal(torch.cat(inputs), pad(single.inputs))
            assert torch.equal(torch.cat(labels), pad(single.labels))
            counts = [int((p.targets != IGNORE).sum()) for p in parts]
            assert sum(counts) == int((single.targets != IGNORE).sum())
            for p, c in zip(parts, counts):  # fixed-size slots, this rank's targets only
                assert len(p.positions) >= c and float(p.loss_scale) == pytest.approx(c * world / sum(counts))


def test_a_rank_with_no_rows_gets_one_row_with_nothing_to_predict():
    from recengine.data.batching import ClozeBatches, IGNORE

    seqs = _eval_set(users=9).inputs  # batches of 8 and 1: on 2 ranks the last one leaves rank 0 empty
    b = ClozeBatches(seqs, 10, 8, 0.3, seed=3)
    b.shard(0, 2)
    last = list(b.epoch(0))[-1]
    assert len(last) == 1 and (last.targets == IGNORE).all() and float(last.loss_scale) == 0.0


def test_objective_with_zero_scale_gives_zero_loss_and_zero_gradients():
    from recengine.losses import Objective, full_cross_entropy

    model = _model().train()
    objective = Objective(model, full_cross_entropy(model))
    loss = objective(torch.ones(1, 10, dtype=torch.long), torch.zeros(8, dtype=torch.long), torch.full((8,), -100), torch.tensor(0.0))
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.all(p.grad == 0) for p in model.parameters() if p.grad is not None)


def test_batch_size_is_global_or_per_gpu():
    assert distributed.global_batch_size(64, "global", 4) == 64
    assert distributed.global_batch_size(64, "per_gpu", 4) == 256


# --- training and checkpoints -------------------------------------------------------------


def _train_job(recipe_path: Path, run_path: Path, losses: Path, overrides: list[str], resume: bool) -> None:
    recipe = load_recipe(recipe_path, load_registry(extra_plugins=[("record", LossRecorder(losses))]), overrides)
    train(recipe, RunDir(run_path), resume=resume)


def _losses(path: Path) -> list[list[float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny recipe trained 2 epochs on one process, on two with DDP and on two with FSDP2
    (also with a weight average, train.ema_decay)."""
    tmp = tmp_path_factory.mktemp("dist")
    recipe = tmp / "tiny.toml"
    recipe.write_text(textwrap.dedent(TINY_RECIPE) + '\n[[monitors]]\nname = "record"\n')
    settings = {"one": (1, ['distributed.strategy="ddp"']), "two": (2, ['distributed.strategy="ddp"']),
                "fsdp2": (2, ['distributed.strategy="fsdp2"']),
                "fp16": (2, ['distributed.grad_compression="fp16"', "distributed.gradient_as_bucket_view=false"]),
                "rows": (2, ['distributed.input_embedding_grads="touched-rows"']),
                "ema-one": (1, ['distributed.strategy="ddp"', "train.ema_decay=0.9"]),
                "ema-two": (2, ['distributed.strategy="ddp"', "train.ema_decay=0.9"]),
                "ema-fsdp2": (2, ['distributed.strategy="fsdp2"', "train.ema_decay=0.9"])}
    for name, (procs, extra) in settings.items():
        (tmp / name).mkdir()
        args = (recipe, tmp / name, tmp / f"{name}.jsonl", OVERRIDES + extra, False)
        _train_job(*args) if procs == 1 else _spawn(_train_job, *args)
    return tmp


def _latest_weights(run: Path, filename: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint.read_pointer(run / "checkpoints", "latest") / filename))


def _assert_follows_one_process(runs: Path, name: str, one_name: str = "one",
                                files: tuple[str, ...] = ("model.safetensors",)) -> None:
    """Run ``name`` logged the same steps and losses as the 1-process run, and ended with the same weights."""
    one, other = _losses(runs / f"{one_name}.jsonl"), _losses(runs / f"{name}.jsonl")
    assert [s for s, _ in other] == [s for s, _ in one]
    np.testing.assert_allclose([v for _, v in other], [v for _, v in one], rtol=1e-5)
    for filename in files:
        a, b = _latest_weights(runs / one_name, filename), _latest_weights(runs / name, filename)
        assert a.keys() == b.keys()  # FSDP2 too saves the full, unsharded state under the single-process keys
        # Adam divides by sqrt(v): where a gradient is ~0, float rounding differences between the two
        # reductions move a weight by up to ~lr, so weights match to a looser tolerance than losses.
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_two_processes_follow_the_same_loss_trajectory_as_one(runs):
    one = _losses(runs / "one.jsonl")
    assert [s for s, _ in one] == list(range(1, len(one) + 1))
    assert len(one) == 2 * 8  # 8 global batches per epoch, whatever the process count
    _assert_follows_one_process(runs, "two")


@pytest.mark.slow
def test_fp16_gradient_compression_follows_one_process_to_fp16_precision(runs):
    one, compressed = _losses(runs / "one.jsonl"), _losses(runs / "fp16.jsonl")
    assert [s for s, _ in compressed] == [s for s, _ in one]
    # The first loss precedes any all-reduce; later ones drift by fp16 rounding of the gradients only.
    assert compressed[0][1] == pytest.approx(one[0][1], rel=1e-6)
    np.testing.assert_allclose([v for _, v in compressed], [v for _, v in one], rtol=2e-2)
    assert [v for _, v in compressed] != [v for _, v in _losses(runs / "two.jsonl")]  # the hook really ran


@pytest.mark.slow
def test_touched_rows_exchange_follows_the_same_loss_trajectory_as_one_process(runs):
    # Were the input table neither all-reduced nor exchanged, rank 0's table would follow its
    # own rows only and the losses would part from one process's after the first step.
    _assert_follows_one_process(runs, "rows")


@pytest.mark.slow
def test_fsdp2_on_two_processes_follows_the_same_loss_trajectory_as_one(runs):
    _assert_follows_one_process(runs, "fsdp2")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ema-two", "ema-fsdp2"])
def test_a_weight_average_on_two_processes_follows_one_process(runs, name):
    # Each rank averages its replica (DDP) or its shard (FSDP2); checkpoints gather the average into
    # model.safetensors and the raw weights into raw.safetensors, as one process writes them.
    _assert_follows_one_process(runs, name, "ema-one", ("model.safetensors", "raw.safetensors"))
    one = _latest_weights(runs / "ema-one")
    assert any(not torch.equal(one[k], v) for k, v in _latest_weights(runs / "ema-one", "raw.safetensors").items())
    validations = lambda run: [r["ndcg@10"] for r in map(json.loads, (runs / run / "metrics.jsonl").read_text().splitlines())
                               if r["split"] == "valid"]
    np.testing.assert_allclose(validations(name), validations("ema-one"), rtol=1e-5)  # validated on the average alike


def _fsdp2_swap_job(out: Path) -> None:
    from recengine.ema import WeightAverage
    from recengine.losses import Objective, full_cross_entropy

    dist = distributed.setup("fsdp2")
    model = _model()
    objective = dist.wrap(Objective(model, full_cross_entropy(model)))
    average = WeightAverage(model, 0.5, on_swap=lambda: dist.reshard(objective))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)  # the raw weights move on: half the initial ones
    average.update(100)  # decay 0.5: the average is 0.75 x the initial weights
    tokens = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8, 9, model.mask_token]])
    with torch.no_grad():
        # Each no-grad forward leaves the root module's gathered parameters behind (FSDP2 does not
        # reshard its root after forward); the swap must not let the next forward reuse them.
        raw_before = objective(tokens)
        with average.swapped():
            averaged = objective(tokens)
        raw_after = objective(tokens)
    if dist.is_main:
        save_file({"raw_before": raw_before, "averaged": averaged, "raw_after": raw_after}, str(out))
    dist.close()


@pytest.mark.slow
def test_the_weight_average_swap_reaches_fsdp2s_gathered_parameters(tmp_path):
    from recengine.losses import Objective, full_cross_entropy

    _spawn(_fsdp2_swap_job, tmp_path / "scores.safetensors")
    got = load_file(str(tmp_path / "scores.safetensors"))
    model = _model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    objective = Objective(model, full_cross_entropy(model))
    tokens = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8, 9, model.mask_token]])
    expected = {}
    for name, factor in (("raw", 0.5), ("averaged", 0.75)):
        with torch.no_grad():
            for key, p in model.named_parameters():
                p.copy_(initial[key] * factor)
            expected[name] = objective(tokens)
    torch.testing.assert_close(got["raw_before"], expected["raw"])
    torch.testing.assert_close(got["averaged"], expected["averaged"])
    torch.testing.assert_close(got["raw_after"], expected["raw"])


@pytest.mark.slow
def test_checkpoint_from_two_processes_resumes_on_one(runs, tmp_path):
    # Rewind a copy of the 2-process run to its epoch-1 checkpoint and finish it on one process.
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(runs / "two", run)
    steps = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    checkpoint.set_pointer(run / "checkpoints", "latest", steps[0])
    assert checkpoint.load_state(run / "checkpoints" / steps[0])["loop"]["epoch"] == 1
    _train_job(run / "recipe.toml" if (run / "recipe.toml").exists() else runs / "tiny.toml", run, tmp_path / "r.jsonl",
               OVERRIDES, True)
    resumed = _losses(tmp_path / "r.jsonl")
    assert [s for s, _ in resumed] == list(range(9, 17))
    np.testing.assert_allclose([v for _, v in resumed], [v for _, v in _losses(runs / "two.jsonl")][8:], rtol=1e-5)
    a, b = _latest_weights(run), _latest_weights(runs / "two")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-3)


def test_bf16_gradient_compression_on_cpu_is_refused_with_a_fix(tmp_path):
    import torch.distributed as tdist

    from recengine.errors import UserError

    tdist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        with pytest.raises(UserError, match='"fp16" or "none" on CPU'):
            distributed.Distributed("ddp", 0, 1, 0).wrap(torch.nn.Linear(2, 2), grad_compression="bf16")
    finally:
        tdist.destroy_process_group()


# --- the input table's gradient as touched rows -------------------------------------------


def _touched_rows_job(out: Path) -> None:
    """Each rank: an embedding backward over its own ids (3 rows on rank 0, 2 on rank 1, with
    repeats), then the exchange; rank 0 writes every rank's gradient and DDP's mean."""
    import torch.distributed as tdist

    dist = distributed.setup("ddp")
    torch.manual_seed(0)
    table = torch.nn.Embedding(20, 4, padding_idx=0)
    torch.manual_seed(10 + dist.rank)
    ids = torch.randint(0, 20, (3 - dist.rank, 5))
    (table(ids) * torch.randn(*ids.shape, 4)).sum().backward()
    expected = table.weight.grad.clone()
    tdist.all_reduce(expected)
    distributed.TouchedRows(table.weight, 3 * 5, dist.world_size)(ids)
    grads = [torch.empty_like(expected) for _ in range(dist.world_size)]
    tdist.all_gather(grads, table.weight.grad)
    if dist.is_main:
        save_file({"rank0": grads[0], "rank1": grads[1], "expected": expected / dist.world_size}, str(out))
    dist.close()


@pytest.mark.slow
def test_touched_rows_give_every_rank_ddps_mean_gradient(tmp_path):
    _spawn(_touched_rows_job, tmp_path / "grads.safetensors")
    saved = load_file(str(tmp_path / "grads.safetensors"))
    rank0, rank1 = saved["rank0"], saved["rank1"]
    assert torch.equal(rank0, rank1)  # bit for bit: replicas must not drift apart
    torch.testing.assert_close(rank0, saved["expected"], rtol=1e-6, atol=1e-7)
    assert (rank0 != 0).any(dim=1).sum() > 5 and (rank0[0] == 0).all()


def test_touched_rows_are_refused_under_fsdp2(tmp_path):
    import torch.distributed as tdist

    from recengine.errors import UserError

    tdist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        model = _model().train()
        with pytest.raises(UserError, match='is a DDP option; .* use "all-reduce" with distributed.strategy = "fsdp2"'):
            distributed.Distributed("fsdp2", 0, 1, 0).wrap(model, input_table=model.item_embedding, ids_per_rank=10)
    finally:
        tdist.destroy_process_group()


def test_an_ilora_model_declares_its_base_models_input_table():
    from recengine_plugins.ilora import ILoRA, ILoRAOptions

    model = _model()
    assert ILoRA(ILoRAOptions()).adapt(model).input_embedding() is model.item_embedding


def test_touched_rows_need_an_untied_input_table():
    from recengine.errors import UserError
    from recengine.training import exchanged_table
    from recengine_plugins.bert4rec import bert4rec

    with pytest.raises(UserError, match="model.tied = false"):
        exchanged_table(bert4rec(30, hidden=8, layers=1, tied=True), "touched-rows", 11, "global", 2)
    untied = bert4rec(30, hidden=8, layers=1, max_len=12)
    assert exchanged_table(untied, "all-reduce", 11, "global", 2) == {}
    assert exchanged_table(untied, "touched-rows", 11, "global", 2) == {"input_table": untied.item_embedding, "ids_per_rank": 6 * 12}
