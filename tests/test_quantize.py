"""int8's GPU product for shapes cuBLAS refuses: exact against torch's own int32 matmul (the known answer)."""

import pytest
import torch

from baselines import quantize


@pytest.mark.parametrize("block_elements", [2**26, 7 * 3])  # one block; several blocks of 3 rows (b is 7 wide)
def test_exact_int_mm_equals_an_int32_matmul_even_past_float32s_exact_range(monkeypatch, block_elements) -> None:
    monkeypatch.setattr(quantize, "EXACT_BLOCK_ELEMENTS", block_elements)
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (11, 3073), dtype=torch.int8, generator=generator)
    b = torch.randint(-128, 128, (3073, 7), dtype=torch.int8, generator=generator)
    a[0], b[:, 0] = 127, 127  # 127 * 127 * 3073 = 49,564,417: an odd sum above 2**24, which float32 rounds
    expected = torch.matmul(a.to(torch.int32), b.to(torch.int32))
    product = quantize.exact_int_mm(a, b)
    assert product.dtype == torch.int32 and torch.equal(product, expected)
    assert product[0, 0].item() == 127 * 127 * 3073


def test_keep_int8_matmuls_on_gpu_leaves_cpu_products_to_torchao_and_patches_once(monkeypatch) -> None:
    from torchao.kernel import intmm

    monkeypatch.setattr(intmm, "safe_int_mm", intmm.safe_int_mm)  # restored after the test
    quantize.keep_int8_matmuls_on_gpu()
    patched = intmm.safe_int_mm
    quantize.keep_int8_matmuls_on_gpu()
    assert intmm.safe_int_mm is patched and patched.keeps_int8_on_gpu
    a = torch.randint(-128, 128, (5, 12), dtype=torch.int8)
    b = torch.randint(-128, 128, (12, 3), dtype=torch.int8)
    assert torch.equal(patched(a, b), torch.matmul(a.to(torch.int32), b.to(torch.int32)))
    monkeypatch.setattr(quantize, "exact_int_mm", lambda *_: pytest.fail("a CPU product left torchao's path"))
    patched(a, b)  # 12 x 3: a width cuBLAS would refuse, but on the CPU torchao keeps it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_int8_products_cublas_refuses_stay_on_the_gpu_and_equal_int32(monkeypatch) -> None:
    from torchao.kernel import intmm

    monkeypatch.setattr(intmm, "safe_int_mm", intmm.safe_int_mm)
    quantize.keep_int8_matmuls_on_gpu()
    a = torch.randint(-128, 128, (33, 538), dtype=torch.int8)
    b = torch.randint(-128, 128, (538, 10), dtype=torch.int8)
    product = intmm.safe_int_mm(a.cuda(), b.cuda())
    assert product.is_cuda and torch.equal(product.cpu(), torch.matmul(a.to(torch.int32), b.to(torch.int32)))
