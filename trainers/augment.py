"""Batch augmentation on the device: random flips and translations of a whole batch at once."""
from __future__ import annotations

import torch


def batch_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right (NCHW)."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def batch_translate(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift every image by its own random offset in [-pad, pad] px, reflecting at borders.

    One gather for the whole batch instead of a crop per image: per-image Python loops would
    dominate the step time for small images.
    """
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Every image moved by the same (dy, dx) px, reflecting at the borders: a test-time view."""
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    h, w = x.shape[2:]
    padded = torch.nn.functional.pad(x, (p, p, p, p), mode="reflect")
    return padded[:, :, p - dy:p - dy + h, p - dx:p - dx + w]


def batch_resized_crop(x: torch.Tensor, min_area: float, generator: torch.Generator,
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop for a whole batch: each image gets its own crop (area fraction in
    [min_area, 1], aspect ratio in `ratio`, random position), resized back to the input size
    with one affine grid sample on the device."""
    n = x.shape[0]
    dev = x.device
    area = min_area + (1 - min_area) * torch.rand(n, device=dev, generator=generator)
    log_r = torch.empty(n, device=dev).uniform_(*map(float, torch.log(torch.tensor(ratio))),
                                                generator=generator)
    r = torch.exp(log_r)
    sx = torch.sqrt(area * r).clamp(max=1.0)   # crop width / image width
    sy = torch.sqrt(area / r).clamp(max=1.0)
    tx = (1 - sx) * (2 * torch.rand(n, device=dev, generator=generator) - 1)
    ty = (1 - sy) * (2 * torch.rand(n, device=dev, generator=generator) - 1)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                                           align_corners=False)
