import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from recengine.cli.main import app
from recengine_plugins.tensorboard import TensorBoardMonitor


def test_gpu_memory_and_hardware_are_logged(tmp_path):
    monitor = TensorBoardMonitor(tmp_path, 1, memory=lambda: {"system/gpu_memory_allocated_mb": 12.5},
                                 hardware={"device": "NVIDIA H100", "torch": "2.13.0"})
    monitor.log_scalars(10, {"train/loss": 1.0})
    monitor.log_scalars(10, {"valid/ndcg@10": 0.2})  # memory is logged with training scalars only
    monitor.close()
    events = EventAccumulator(str(tmp_path)).Reload()
    assert [e.value for e in events.Scalars("system/gpu_memory_allocated_mb")] == [12.5]
    assert "hardware/text_summary" in events.Tags()["tensors"]
    text = events.Tensors("hardware/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "NVIDIA H100" in text


def test_no_gpu_memory_scalar_without_cuda(tmp_path):
    monitor = TensorBoardMonitor(tmp_path, 1, memory=None)
    monitor.log_scalars(1, {"train/loss": 1.0})
    monitor.close()
    assert EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"] == ["train/loss"]


def test_a_training_run_logs_what_the_issue_lists(tmp_path, tiny_recipe):
    """From a real (tiny) run: training and validation scalars, learning rate, throughput,
    gradient norm, hparams with final metrics, hardware; and the run's hardware.json."""
    result = CliRunner().invoke(app, ["train", str(tiny_recipe), "train.epochs=2", 'monitors=[{name="tensorboard"}]',
                                      "--output-dir", str(tmp_path), "--name", "run"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s", "valid/ndcg@10"} <= scalars, scalars
    assert "hardware/text_summary" in events.Tags()["tensors"]
    assert events.PluginTagToContent("hparams"), "hparams summary written"
    hardware = json.loads((run / "hardware.json").read_text())
    assert hardware["cpu_name"] and hardware["cpu_count"] >= 1 and hardware["torch"] and hardware["recengine"]
