// Progress for long loops: a redrawn bar on a TTY (time per step, ETA), a few
// plain lines otherwise (logs, CI), nothing in --json mode.

export class Progress {
  private t0 = performance.now();
  private last = 0;
  private mode: "bar" | "lines" | "none";
  constructor(mode: "auto" | "bar" | "lines" | "none", private label: string, private out: NodeJS.WriteStream = process.stderr) {
    this.mode = mode === "auto" ? (out.isTTY ? "bar" : "lines") : mode;
  }
  update(i: number, n: number): void {
    if (this.mode === "none") return;
    const el = (performance.now() - this.t0) / 1000;
    const per = el / i;
    const eta = per * (n - i);
    const text = `${this.label} ${i}/${n}  ${per.toFixed(2)} s/step  ETA ${eta.toFixed(0)} s`;
    if (this.mode === "bar") {
      const w = 24, f = Math.round((w * i) / n);
      this.out.write(`\r[${"#".repeat(f)}${".".repeat(w - f)}] ${text}   `);
    } else if (i === n || performance.now() - this.last > 5000 || i === 1) {
      this.out.write(text + "\n");
      this.last = performance.now();
    }
  }
  done(): void {
    if (this.mode === "bar") this.out.write("\n");
  }
}
