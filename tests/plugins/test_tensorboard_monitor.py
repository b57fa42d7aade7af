from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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
