"""``moa sample``: generate text from a trained run's checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a trained run")
    p.add_argument("run_dir", metavar="DIR")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)


def load_run(run_dir: Path):
    """(model in eval mode, tokenizer, config) of a run directory."""
    from moa.config import config_from_dict
    from moa.data import ByteTokenizer, HFTokenizer
    from moa.model import Transformer
    from moa.train.checkpoint import load_checkpoint, read_meta
    from moa.train.records import CONFIG, read_json

    if not (run_dir / CONFIG).exists():
        raise FileNotFoundError(f"{run_dir} is not a moa run directory (no {CONFIG})")
    cfg = config_from_dict(read_json(run_dir / CONFIG))
    if (run_dir / "model.pt").exists():  # FSDP runs leave consolidated weights here
        weights = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=False)
        state = read_meta(run_dir)
    else:
        state = load_checkpoint(run_dir)
        weights = state["model"]
    cfg = cfg.replace(model=cfg.model.replace(vocab_size=state["vocab_size"]))
    model = Transformer(cfg.model)
    model.load_state_dict(weights)
    model.eval()
    if state["tokenizer"] == "bytes":
        tok = ByteTokenizer()
    else:
        from tokenizers import Tokenizer

        path = run_dir / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; the run's tokenizer {state['tokenizer']} cannot be rebuilt")
        tok = HFTokenizer(Tokenizer.from_file(str(path)), state["tokenizer"], vocab_size=state["vocab_size"])
    return model, tok, cfg


@torch.no_grad()
def generate(model, ids: list[int], n: int, temperature: float, top_k, context: int, generator) -> list[int]:
    out = list(ids)
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
    model, tok, cfg = load_run(Path(args.run_dir))
    ids = tok.encode(args.prompt) if args.prompt else [tok.eos_id if tok.eos_id is not None else 0]
    gen = torch.Generator().manual_seed(args.seed)
    new = generate(model, ids, args.tokens, args.temperature, args.top_k, cfg.train.seq_len, gen)
    print(args.prompt + tok.decode(new))
    return 0
