// The op library: thin typed wrappers over shaders/*.wgsl. Model code imports
// `* as ops from "engine/ops/index.ts"` and never touches a GPUBuffer.
export * from "./elementwise.ts";
export * from "./matmul.ts";
export * from "./conv.ts";
export * from "./norm.ts";
export * from "./attention.ts";
export * from "./shape.ts";
