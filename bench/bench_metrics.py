"""Evaluation at scale: every one of N embeddings queries the other N - 1, through training.metrics in chunks.

    python bench/bench_metrics.py [--n 100000] [--queries 2000] [--dim 512] [--classes 100]

The embeddings are synthetic: one random unit centre per class, each member its centre plus Gaussian noise, so
the rankings are neither trivial nor random. Prints the time, the peak resident memory of the process, and what
the N × N similarity matrix alone would have taken. With --queries Q, only the first Q embeddings query the
other N - Q (the same chunks against a gallery of full size), to measure speed and memory at a size whose full
run would take too long on a small machine.
"""

import argparse
import json
import platform
import resource
import time

import torch

from training.metrics import evaluate_retrieval


def clustered(n: int, dim: int, classes: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=generator), dim=1)
    labels = torch.randint(classes, (n,), generator=generator)
    vectors = centres[labels] + noise * torch.randn(n, dim, generator=generator) / dim ** 0.5
    return torch.nn.functional.normalize(vectors, dim=1), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--queries", type=int, help="[default: all N, each querying the rest]")
    parser.add_argument("--noise", type=float, default=3.0, help="noise norm relative to the unit centres")
    args = parser.parse_args()
    vectors, labels = clustered(args.n, args.dim, args.classes, args.noise)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    if args.queries:
        q = args.queries
        result = evaluate_retrieval(vectors[:q], labels[:q], vectors[q:], labels[q:])
    else:
        result = evaluate_retrieval(vectors, labels)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "n": args.n, "dim": args.dim,
        "classes": args.classes, "queries": result.queries, "seconds": round(seconds, 1),
        "queries_per_second": round(result.queries / seconds, 1),
        "peak_rss_gib_before": round(before, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "n_by_n_float32_gib": round(args.n ** 2 * 4 / 2**30, 1), "map": round(result.map, 4),
        "p@10": round(result.precision_at[10], 4)}))


if __name__ == "__main__":
    main()
