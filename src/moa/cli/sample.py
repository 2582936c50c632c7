"""``moa sample``: generate text from a trained run's checkpoint."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a trained run")
    p.add_argument("run_dir", metavar="DIR")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)


def generate(model, ids: list[int], n: int, temperature: float, top_k, context: int, generator) -> list[int]:
    import torch

    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            x = torch.tensor([out[-context:]], dtype=torch.long)
            logits = model(x)[0, -1].float()
            if temperature <= 0:
                nxt = int(logits.argmax())
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
            out.append(nxt)
    return out[len(ids):]


def run(args) -> int:
    if args.tokens <= 0:
        raise ValueError(f"--tokens={args.tokens} must be positive")
    if args.temperature < 0:
        raise ValueError(f"--temperature={args.temperature} must be >= 0 (0: greedy)")
    import torch

    from moa.train.runs import load_run

    model, tok, cfg = load_run(Path(args.run_dir))
    ids = tok.encode(args.prompt) if args.prompt else [tok.eos_id if tok.eos_id is not None else 0]
    gen = torch.Generator().manual_seed(args.seed)
    new = generate(model, ids, args.tokens, args.temperature, args.top_k, cfg.train.seq_len, gen)
    print(args.prompt + tok.decode(new))
    return 0
