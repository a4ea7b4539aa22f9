#!/usr/bin/env python3
"""PyTorch on the GPU, step by step: run natively and through gpufn's stub by
scripts/gpu-check.sh (issue 5, step 2).

Each step prints one line, `STEP <name> ok <detail>` or `STEP <name> FAIL <error>`, and a
failing step does not stop the later ones (each creates what it needs), so one run shows
everything that works and everything that does not. Results are compared with the same
computation on the CPU. Exit code: 0 if every step passed, 1 otherwise.
"""

import sys
import time
import traceback


def main() -> int:
    try:
        import torch
    except ImportError as e:  # the GPU machine is expected to have torch
        print(f"STEP import FAIL {e}")
        return 1
    print(f"STEP import ok torch {torch.__version__} cuda {torch.version.cuda}")
    failures = 0

    def step(name, body):
        nonlocal failures
        start = time.perf_counter()
        try:
            detail = body()
            ms = (time.perf_counter() - start) * 1e3
            print(f"STEP {name} ok {detail} ({ms:.1f} ms)", flush=True)
        except Exception as e:  # report and go on: the point is a full picture
            failures += 1
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            print(f"STEP {name} FAIL {last}", flush=True)

    def available():
        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False")
        return f"{torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}"

    def properties():
        p = torch.cuda.get_device_properties(0)
        return f"cc {p.major}.{p.minor}, {p.total_memory >> 20} MiB, {p.multi_processor_count} SMs"

    def creation():
        a = torch.arange(1_000_000, device="cuda", dtype=torch.float32)
        z = torch.zeros(1000, device="cuda")
        r = torch.randn(1000, device="cuda")
        total = a.sum().item()
        expected = 999_999 * 1_000_000 / 2
        if abs(total - expected) / expected > 1e-4 or z.abs().sum().item() != 0 or r.numel() != 1000:
            raise AssertionError(f"sum {total}, expected {expected}")
        return f"sum {total:.0f}"

    def copies():
        host = torch.randn(4 << 20)
        back = host.cuda().cpu()
        pinned = torch.randn(4 << 20).pin_memory()
        back_pinned = pinned.to("cuda", non_blocking=True).to("cpu")
        torch.cuda.synchronize()
        if not torch.equal(host, back) or not torch.equal(pinned, back_pinned):
            raise AssertionError("bytes changed on the way")
        return "16 MiB pageable and pinned round trips"

    def matmul():
        torch.manual_seed(0)
        a, b = torch.randn(512, 256), torch.randn(256, 384)
        gpu = (a.cuda() @ b.cuda()).cpu()
        err = (gpu - a @ b).abs().max().item()
        if err > 1e-2:
            raise AssertionError(f"max error {err}")
        return f"512x256 @ 256x384, max error {err:.2e}"

    def convolution():
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)
        x = torch.randn(2, 3, 32, 32)
        expected = conv(x)
        got = conv.cuda()(x.cuda()).cpu()
        err = (got - expected).abs().max().item()
        if err > 1e-3:
            raise AssertionError(f"max error {err}")
        return f"conv2d 3->8 on 2x3x32x32, max error {err:.2e}"

    def training_step():
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )
        x, y = torch.randn(128, 32), torch.randint(0, 10, (128,))
        reference = [p.detach().clone() for p in model.parameters()]
        cpu_model = torch.nn.Sequential(
            torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )
        cpu_model.load_state_dict(model.state_dict())
        model = model.cuda()
        for m, xs, ys in ((model, x.cuda(), y.cuda()), (cpu_model, x, y)):
            optimizer = torch.optim.SGD(m.parameters(), lr=0.1)
            loss = torch.nn.functional.cross_entropy(m(xs), ys)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        moved = max((p.detach().cpu() - r).abs().max().item() for p, r in zip(model.parameters(), reference))
        err = max(
            (p.detach().cpu() - q.detach()).abs().max().item()
            for p, q in zip(model.parameters(), cpu_model.parameters())
        )
        if moved == 0 or err > 1e-4:
            raise AssertionError(f"weights moved {moved}, differ from the CPU step by {err}")
        return f"MLP 32-64-10, one SGD step, weights match the CPU step within {err:.1e}"

    for name, body in (
        ("available", available),
        ("properties", properties),
        ("creation", creation),
        ("copies", copies),
        ("matmul", matmul),
        ("convolution", convolution),
        ("training_step", training_step),
    ):
        step(name, body)
    print(f"torch_check {'ok' if failures == 0 else f'{failures} step(s) failed'}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
