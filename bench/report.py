#!/usr/bin/env python3
"""Summarise one bench/run.sh results directory as Markdown tables on stdout.

Every figure is the median over the repeated runs, with the minimum and maximum beside it.
A ratio "ours / peer" above 1 means our side took longer (or used more) than the peer.
"""

import csv
import json
import re
import statistics
import sys
from pathlib import Path

MIB = 1024 * 1024


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: bench/report.py RESULTS_DIR")
    results = Path(sys.argv[1])
    machine = read_pairs(results / "machine.txt")
    parameters = read_pairs(results / "parameters.txt")

    print("## Machine\n")
    for key, value in machine.items():
        print(f"- {key}: {value}")
    print()
    size_mib = float(parameters["size_mib"])
    transfer_table(results / "push.json", f"Push of a {size_mib:g} MiB JAR", size_mib)
    transfer_table(results / "pull.json", f"Pull of the {size_mib:g} MiB blob", size_mib)
    small_kib = int(parameters.get("small_kib", 0))
    if small_kib:
        transfer_table(
            results / "pull-small.json", f"Pull of a {small_kib} KiB JAR", small_kib / 1024
        )
    admission_table(results / "admission", int(parameters["artifacts"]))
    memory_table(
        results / "memory",
        int(parameters["memory_small_mib"]),
        int(parameters["memory_large_mib"]),
    )
    controllers = results / "controllers.txt"
    if controllers.exists():
        print("## Controllers (bench/controllers.sh)\n")
        print("```text")
        print(controllers.read_text().rstrip())
        print("```")


def read_pairs(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(": ")
        pairs[key] = value
    return pairs


def spread(values: list[float], digits: int) -> str:
    """Formats the median and the range of `values`."""
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}–{max(values):.{digits}f})"
    )


def transfer_table(path: Path, title: str, size_mib: float) -> None:
    """Prints one hyperfine export; the first command is ours, the others are peers.

    Times under 0.1 s per run are printed in milliseconds, so small transfers keep their
    digits.
    """
    commands = json.loads(path.read_text())["results"]
    ours = commands[0]
    scale, unit = (1000, "ms") if ours["median"] < 0.1 else (1, "s")
    print(f"## {title}\n")
    print(f"{len(ours['times'])} runs each after warm-up runs.\n")
    print(f"| command | time {unit}, median (min–max) | MiB/s at median | ours / this |")
    print("| --- | --- | --- | --- |")
    for command in commands:
        median = command["median"]
        ratio = ours["median"] / median
        times = [time * scale for time in command["times"]]
        print(
            f"| {command['command']} | {spread(times, 2)} "
            f"| {size_mib / median:.0f} | {ratio:.2f} |"
        )
    print()


def admission_table(directory: Path, artifacts: int) -> None:
    """Prints latency percentiles per server and concurrency from ab's CSV and text output."""
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for csv_path in sorted(directory.glob("*.csv")):
        match = re.fullmatch(r"(\w+)-c(\d+)-r(\d+)", csv_path.stem)
        if match is None:
            continue
        server, concurrency = match.group(1), int(match.group(2))
        runs.setdefault((server, concurrency), []).append(read_ab_run(csv_path))

    print(f"## Admission latency, {artifacts} AppArtifacts in the cache\n")
    print("Each cell: median over the ab runs (min–max), in milliseconds.\n")
    print(
        "| clients | server | requests/s | p50 ms | p99 ms | max ms "
        "| p50 ours / peer | p99 ours / peer |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for concurrency in sorted({key[1] for key in runs}):
        ours = runs.get(("ours", concurrency), [])
        peer = runs.get(("peer", concurrency), [])
        for server, measured in (("ours", ours), ("peer", peer)):
            if not measured:
                continue
            ratios = ["", ""]
            if server == "ours" and peer:
                ratios = [
                    f"{median_of(ours, key) / median_of(peer, key):.2f}"
                    for key in ("p50", "p99")
                ]
            print(
                f"| {concurrency} | {server} "
                f"| {spread([run['rate'] for run in measured], 0)} "
                f"| {spread([run['p50'] for run in measured], 3)} "
                f"| {spread([run['p99'] for run in measured], 3)} "
                f"| {spread([run['max'] for run in measured], 2)} "
                f"| {ratios[0]} | {ratios[1]} |"
            )
    print()


def median_of(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def read_ab_run(csv_path: Path) -> dict[str, float]:
    """Reads one ab run: percentiles from its -e CSV, and the rate and errors from its output."""
    with csv_path.open() as file:
        rows = {int(float(row[0])): float(row[1]) for row in list(csv.reader(file))[1:]}
    text = csv_path.with_suffix(".txt").read_text()
    # ab counts a response whose length differs from the first one as failed. Our patches carry
    # a signed URL, and kube serialises a patch as an array of byte values, so their length
    # changes with the signature's bytes. Only the other kinds of failure count here.
    kinds = re.search(
        r"\(Connect: (\d+), Receive: (\d+), Length: \d+, Exceptions: (\d+)\)", text
    )
    failed = kinds is not None and any(int(count) for count in kinds.groups())
    non_2xx = re.search(r"^Non-2xx responses:\s+(\d+)", text, re.M)
    if failed or non_2xx:
        sys.exit(f"{csv_path.with_suffix('.txt')}: ab counted failed or non-2xx requests")
    rate = float(re.search(r"^Requests per second:\s+([\d.]+)", text, re.M).group(1))
    return {"p50": rows[50], "p99": rows[99], "max": rows[100], "rate": rate}


def memory_table(directory: Path, small_mib: int, large_mib: int) -> None:
    """Prints the peak RSS of pushing a small and a large generated JAR, and the growth."""
    peaks = {}
    for size in (small_mib, large_mib):
        peaks[size] = [
            read_peak_rss_mib(path) for path in sorted(directory.glob(f"push-{size}-r*.txt"))
        ]
    print("## Peak RSS of a push (examples/oci_transfer)\n")
    print("| pushed | peak RSS MiB, median (min–max) |")
    print("| --- | --- |")
    for size, values in peaks.items():
        print(f"| {size} MiB | {spread(values, 1)} |")
    growth = statistics.median(peaks[large_mib]) - statistics.median(peaks[small_mib])
    print(f"\nGrowth from {small_mib} MiB to {large_mib} MiB: {growth:+.1f} MiB of RSS.\n")


def read_peak_rss_mib(path: Path) -> float:
    text = path.read_text()
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return kib / 1024


if __name__ == "__main__":
    main()
