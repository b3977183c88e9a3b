"""qidbm.profiling.ProductCounter: calls, shapes and FLOPs of the matrix products run under it."""

import torch

from qidbm.models import DBM
from qidbm.profiling import ProductCounter


def test_counts_every_kind_of_matrix_product_and_agrees_with_torch_flop_counter():
    a = torch.rand(6, 5, requires_grad=True)
    b = torch.rand(5, 4)
    with ProductCounter() as pc:
        (a @ b).sum().backward()  # mm forward, mm backward (grad of a: 6x4 @ 4x5)
        torch.addmm(torch.zeros(6, 4), a.detach(), b)
        torch.bmm(torch.rand(2, 3, 4), torch.rand(2, 4, 5))
        torch.baddbmm(torch.zeros(2, 3, 5), torch.rand(2, 3, 4), torch.rand(2, 4, 5))
        torch.sigmoid(a)  # not a product
    assert pc.shapes == {("mm", 1, 6, 5, 4): 1, ("mm", 1, 6, 4, 5): 1, ("addmm", 1, 6, 5, 4): 1,
                         ("bmm", 2, 3, 4, 5): 1, ("baddbmm", 2, 3, 4, 5): 1}
    assert pc.calls == 5
    assert pc.shape_flops == 3 * 2 * 6 * 5 * 4 + 2 * 2 * 2 * 3 * 4 * 5
    assert pc.product_flops == pc.shape_flops  # torch's FlopCounterMode, counted independently
    assert pc.flops >= pc.product_flops
    assert pc.products((6, 5, 4)) == pc.shape_flops / (2 * 6 * 5 * 4)


def test_counts_a_gibbs_sweep_and_starts_afresh_each_time():
    m = DBM([8, 6, 4])
    state = m.random_state(10, torch.Generator().manual_seed(0))
    pc = ProductCounter()
    for _ in range(2):
        with pc, torch.no_grad():
            m.conditional(1, state)  # x_0 W_0 and x_2 W_1^T
    assert pc.shapes == {("mm", 1, 10, 8, 6): 1, ("mm", 1, 10, 4, 6): 1}
