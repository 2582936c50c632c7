"""The CPU peak-memory measurement sees temporaries and frees at the right times."""

import torch

from moa.utils.memory import peak_memory_bytes

MB = 1 << 20


def test_peak_counts_live_temporaries():
    def two_live():
        a = torch.ones(MB // 4)  # 1 MB
        b = torch.ones(MB // 4)  # 1 MB, while a is live
        return float((a + b).sum())  # + 1 MB for the sum

    def one_at_a_time():
        for _ in range(3):
            float(torch.ones(MB // 4).sum())

    two = peak_memory_bytes(two_live)
    one = peak_memory_bytes(one_at_a_time)
    assert 3 * MB <= two < 3.2 * MB, two
    assert 1 * MB <= one < 1.2 * MB, one
