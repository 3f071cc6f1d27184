"""Merging a LoRA adapter into its base GGUF, on small files made here: the sum, the copies, the errors."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from aigrid.learn.merge import MergeError, merge_adapter

_RNG = np.random.default_rng(7)
WEIGHT = _RNG.standard_normal((8, 32)).astype(np.float32)  # numpy (n_out, n_in)
LORA_A = _RNG.standard_normal((2, 32)).astype(np.float32)  # (rank, n_in)
LORA_B = _RNG.standard_normal((8, 2)).astype(np.float32)  # (n_out, rank)
NORM = np.ones(32, dtype=np.float32)


def _base(path: Path) -> Path:
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_string("tokenizer.chat_template", "{{ messages }}")
    writer.add_uint32("llama.block_count", 1)
    writer.add_tensor("blk.0.attn_q.weight", WEIGHT)
    writer.add_tensor("blk.0.attn_norm.weight", NORM)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _adapter(path: Path, alpha: float | None = 4.0, a: np.ndarray = LORA_A) -> Path:
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_string("general.type", "adapter")
    if alpha is not None:
        writer.add_float32("adapter.lora.alpha", alpha)
    writer.add_tensor("blk.0.attn_q.weight.lora_a", a)
    writer.add_tensor("blk.0.attn_q.weight.lora_b", LORA_B)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tensors(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(path)
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}


def test_an_adapted_weight_becomes_w_plus_alpha_over_rank_b_a_and_the_rest_is_copied(tmp_path: Path) -> None:
    out = tmp_path / "model.gguf"
    done = merge_adapter(_base(tmp_path / "base.gguf"), _adapter(tmp_path / "lora.gguf"), out, qtype=None)
    assert done["tensors"] == 1
    merged = _tensors(out)
    np.testing.assert_allclose(merged["blk.0.attn_q.weight"], WEIGHT + 2.0 * LORA_B @ LORA_A, rtol=1e-5)
    np.testing.assert_array_equal(merged["blk.0.attn_norm.weight"], NORM)
    fields = gguf.GGUFReader(out).fields
    assert fields["tokenizer.chat_template"].contents() == "{{ messages }}"
    assert fields["llama.block_count"].contents() == 1


def test_stored_as_q8_0_the_merge_stays_within_its_quantization_step(tmp_path: Path) -> None:
    out = tmp_path / "model.gguf"
    merge_adapter(_base(tmp_path / "base.gguf"), _adapter(tmp_path / "lora.gguf"), out)
    (adapted,) = [t for t in gguf.GGUFReader(out).tensors if t.name == "blk.0.attn_q.weight"]
    assert adapted.tensor_type == gguf.GGMLQuantizationType.Q8_0
    expected = WEIGHT + 2.0 * LORA_B @ LORA_A
    got = gguf.quants.dequantize(adapted.data, adapted.tensor_type)
    assert np.abs(got - expected).max() <= np.abs(expected).max() / 127 + 1e-6


def test_a_file_that_is_no_adapter_or_does_not_fit_is_refused(tmp_path: Path) -> None:
    base = _base(tmp_path / "base.gguf")
    with pytest.raises(MergeError, match="not a LoRA adapter"):
        merge_adapter(base, _adapter(tmp_path / "plain.gguf", alpha=None), tmp_path / "out.gguf")
    wrong = _adapter(tmp_path / "wrong.gguf", a=np.ones((2, 16), dtype=np.float32))
    with pytest.raises(MergeError, match="does not fit"):
        merge_adapter(base, wrong, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists() and not list(tmp_path.glob("*.part"))
