"""A LoRA adapter merged into its base GGUF: the learned model as one file, as fast as its base.

llama.cpp applies an adapter as extra small matrix products at every layer, which cost the embedded
model about 15% of its generation speed. Merged (as llama.cpp's ``llama-export-lora`` does), each
adapted weight becomes ``W + alpha / rank * B @ A``, stored in the base tensor's own quantization
type, so the file has the base's size and speed. Everything else (metadata, vocabulary, chat template,
the other tensors) is copied unchanged. ``gguf`` (llama.cpp's own Python package) reads, dequantizes,
quantizes and writes; nothing here is specific to one architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_ALPHA = "adapter.lora.alpha"


class MergeError(RuntimeError):
    """An adapter that does not fit its base, or a tensor type gguf cannot quantize."""


def merge_adapter(base: Path, adapter: Path, out: Path, qtype: str | None = "Q8_0") -> dict[str, Any]:
    """Write ``base`` with ``adapter`` merged into ``out``, adapted tensors stored as ``qtype`` (None:
    each base tensor's own type); how many tensors changed."""
    import gguf

    reader = gguf.GGUFReader(base)
    lora = gguf.GGUFReader(adapter)
    alpha_field = lora.fields.get(_ALPHA)
    if alpha_field is None:
        raise MergeError(f"{adapter} is not a LoRA adapter (no {_ALPHA})")
    alpha = float(alpha_field.contents())
    parts = {t.name: t for t in lora.tensors}
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    partial = out.with_suffix(".part")
    writer = gguf.GGUFWriter(partial, arch=arch)
    _copy_metadata(reader, writer, gguf)
    tensors: list[tuple[Any, Any]] = []
    merged = 0
    for tensor in reader.tensors:
        a, b = parts.get(f"{tensor.name}.lora_a"), parts.get(f"{tensor.name}.lora_b")
        data = tensor.data
        if a is not None and b is not None:
            kind = tensor.tensor_type if qtype is None else gguf.GGMLQuantizationType[qtype]
            data = _merged(tensor, a, b, alpha, kind, gguf)
            merged += 1
        else:
            kind = tensor.tensor_type
        tensors.append((tensor, data))
        writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, kind)
    if merged * 2 != sum(1 for name in parts if name.endswith((".lora_a", ".lora_b"))):
        raise MergeError(f"{adapter} adapts tensors that {base} does not have")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data in tensors:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()
    partial.replace(out)
    return {"tensors": merged, "bytes": out.stat().st_size}


def _copy_metadata(reader: Any, writer: Any, gguf: Any) -> None:
    """Every key of the base but those the writer sets itself (as gguf's own new-metadata script does)."""
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)


def _merged(tensor: Any, a: Any, b: Any, alpha: float, kind: Any, gguf: Any) -> Any:
    """``W + alpha / rank * B @ A``, quantized as ``kind``."""
    import numpy as np

    weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
    down = gguf.quants.dequantize(a.data, a.tensor_type).astype(np.float32)  # (rank, n_in)
    up = gguf.quants.dequantize(b.data, b.tensor_type).astype(np.float32)  # (n_out, rank)
    rank = down.shape[0]
    if up.shape[1] != rank or (up.shape[0], down.shape[1]) != weight.shape:
        shapes = f"{up.shape} @ {down.shape} vs {weight.shape}"
        raise MergeError(f"the adapter's {tensor.name} does not fit: {shapes}")
    weight += (alpha / rank) * (up @ down)
    try:
        return gguf.quants.quantize(weight, kind)
    except NotImplementedError as exc:
        raise MergeError(f"gguf cannot quantize {tensor.name} as {kind.name}") from exc
