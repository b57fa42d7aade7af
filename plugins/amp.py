"""Precision `amp`: mixed precision through ``torch.autocast``.

bf16 (the default) has fp32's exponent range, so it needs no loss scaling and its
GradScaler is a disabled no-op. fp16 has a narrow exponent range: small gradients
underflow to zero unless the loss is scaled up first, so fp16 gets a real GradScaler.
Parameters and optimizer state stay fp32 either way; only the matmuls and their
activations run in the low precision.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from recengine.hookspecs import hookimpl

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class AMPOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dtype: Literal["bf16", "fp16"] = Field("bf16", description="Autocast dtype: bf16 (no loss scaling needed) or fp16 (with a gradient scaler).")


class AMP:
    def __init__(self, dtype: str, device: torch.device):
        self.device_type = torch.device(device).type
        self.dtype = DTYPES[dtype]
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype)


@hookimpl
def register_precisions(register):
    register("amp", lambda options, device: AMP(options.dtype, device), options=AMPOptions)
