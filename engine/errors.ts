// Errors are values with a code and a message that tells the user what to do.
// Every layer throws SsdError; the CLI prints `code: message` and exits non-zero,
// never a stack trace.

export type ErrorCode =
  | "E_NO_ADAPTER"
  | "E_DEVICE_LOST"
  | "E_GPU_VALIDATION"
  | "E_GPU_OOM"
  | "E_LIMITS"
  | "E_SAFETENSORS_HEADER"
  | "E_MISSING_WEIGHT"
  | "E_SHAPE"
  | "E_DTYPE"
  | "E_BAD_IMAGE"
  | "E_BAD_PARAM"
  | "E_BAD_CONFIG"
  | "E_IO"
  | "E_MODEL_NOT_FOUND"
  | "E_DOWNLOAD"
  | "E_AUTH"
  | "E_OFFLINE"
  | "E_CANCELLED"
  | "E_INTERNAL";

export class SsdError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = "SsdError";
  }
  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

export function isSsdError(e: unknown, code?: ErrorCode): e is SsdError {
  return e instanceof SsdError && (code === undefined || e.code === code);
}

/** Throws E_BAD_PARAM (or another code) unless `cond` holds. */
export function check(cond: unknown, code: ErrorCode, message: string): asserts cond {
  if (!cond) throw new SsdError(code, message);
}
