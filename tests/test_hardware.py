import re

import torch

from recengine.hardware import git_commit, hardware_info, hardware_markdown


def test_hardware_info_on_cpu():
    info = hardware_info("cpu")
    assert info["torch"] == torch.__version__ and info["cuda"] == torch.version.cuda
    assert info["device_type"] == "cpu" and info["device"] == info["cpu_name"] and info["cpu_count"] >= 1
    assert info["recengine"] == "0.1.0"
    assert info["gpu_count"] == torch.cuda.device_count()
    commit = git_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit)
    assert "| torch |" in hardware_markdown(info)
