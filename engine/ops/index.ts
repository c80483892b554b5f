// The op library: thin typed wrappers over shaders/*.wgsl. Model code imports
// `* as ops from "engine/ops/index.ts"` and never touches a GPUBuffer.
export * from "./elementwise.ts";
export * from "./matmul.ts";
