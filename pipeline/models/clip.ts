// CLIP text encoders as transformers defines them (modeling_clip.py):
//
//   CLIPTextModel                   text_model: CLIPTextTransformer
//   CLIPTextModelWithProjection     text_model + text_projection (Linear, no bias)
//
//   CLIPTextTransformer
//     embeddings        token_embedding[ids] + position_embedding[0:N]
//     encoder.layers.i  pre-LN: h += self_attn(layer_norm1(h)) (causal); h += mlp(layer_norm2(h))
//     final_layer_norm
//     pooled            last_hidden_state at the EOS position
//
// SDXL uses both: CLIP ViT-L (`text_encoder`, quick_gelu) and OpenCLIP bigG
// (`text_encoder_2`, gelu, projection). Sizes, activation and ids all come from
// config.json; weight names are transformers' state_dict keys.

import type { Tensor } from "../../engine/tensor.ts";
import * as ops from "../../engine/ops/index.ts";
import { activationFromConfig, type Activation } from "../../engine/ops/elementwise.ts";
import { SsdError } from "../../engine/errors.ts";
import { Linear, LayerNorm, type Weights, type Trace } from "../nn.ts";
import { WeightStore, type WeightStoreOptions } from "../../weights/store.ts";

/** nn.ts's Weights (WeightStore's views fit it), with WeightStore's optional `skip`. */
export interface WeightSource extends Weights {
  sub(prefix: string): WeightSource;
  /** marks keys as deliberately unused */
  skip?(nameOrPrefix: string): void;
}

// ------------------------------------------------------------------ config

/** The fields of transformers' CLIPTextConfig the model uses (defaults as CLIPTextConfig's). */
export interface CLIPTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  projection_dim: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: string;
  layer_norm_eps: number;
  pad_token_id: number;
  bos_token_id: number;
  eos_token_id: number;
  architectures?: string[];
}

const CONFIG_DEFAULTS: CLIPTextConfig = {
  vocab_size: 49408,
  hidden_size: 512,
  intermediate_size: 2048,
  projection_dim: 512,
  num_hidden_layers: 12,
  num_attention_heads: 8,
  max_position_embeddings: 77,
  hidden_act: "quick_gelu",
  layer_norm_eps: 1e-5,
  pad_token_id: 1,
  bos_token_id: 49406,
  eos_token_id: 49407,
};

/** Reads a CLIPTextConfig dict (or the `text_config` of a full CLIPConfig), checking what the model relies on. */
export function parseCLIPTextConfig(raw: Record<string, any>, source = "config.json"): CLIPTextConfig {
  const dict = raw.model_type === "clip" && raw.text_config ? raw.text_config : raw;
  const cfg: CLIPTextConfig = { ...CONFIG_DEFAULTS, ...dict, architectures: raw.architectures };
  const ints: (keyof CLIPTextConfig)[] = ["vocab_size", "hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers", "num_attention_heads", "max_position_embeddings"];
  for (const k of ints) {
    const v = cfg[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) throw new SsdError("E_BAD_CONFIG", `${source}: '${k}' must be a positive integer, got ${JSON.stringify(v)}`);
  }
  if (cfg.hidden_size % cfg.num_attention_heads !== 0) {
    throw new SsdError("E_BAD_CONFIG", `${source}: hidden_size ${cfg.hidden_size} is not divisible by num_attention_heads ${cfg.num_attention_heads}`);
  }
  if (typeof cfg.layer_norm_eps !== "number" || !(cfg.layer_norm_eps > 0)) throw new SsdError("E_BAD_CONFIG", `${source}: 'layer_norm_eps' must be a positive number`);
  activationFromConfig(String(cfg.hidden_act)); // throws E_BAD_CONFIG for an unknown activation
  return cfg;
}

// ------------------------------------------------------------------ loading helpers
// Strict versions of nn.ts's loaders: every CLIP Linear but text_projection has a
// bias and every LayerNorm an affine pair, so a missing one is an error, not a default.

async function loadLinear(w: WeightSource, inFeatures: number, outFeatures: number, bias = true): Promise<Linear> {
  const weight = await w.take("weight", [outFeatures, inFeatures]);
  return new Linear(weight, bias ? await w.take("bias", [outFeatures]) : undefined);
}

async function loadLayerNorm(w: WeightSource, eps: number, dim: number): Promise<LayerNorm> {
  return new LayerNorm(eps, await w.take("weight", [dim]), await w.take("bias", [dim]));
}

const FINFO_F32_MIN = -3.4028234663852886e38;

/** A view of `t` in another shape that takes over t's reference. */
function reshapeOwned(t: Tensor, shape: readonly number[]): Tensor {
  const v = t.reshape(shape);
  t.dispose();
  return v;
}

// ------------------------------------------------------------------ modules

export class CLIPTextEmbeddings {
  constructor(readonly token_embedding: Tensor, readonly position_embedding: Tensor) {}

  static async load(w: WeightSource, cfg: CLIPTextConfig): Promise<CLIPTextEmbeddings> {
    const token = await w.sub("token_embedding").take("weight", [cfg.vocab_size, cfg.hidden_size]);
    const position = await w.sub("position_embedding").take("weight", [cfg.max_position_embeddings, cfg.hidden_size]);
    // A non-persistent buffer (arange) that older checkpoints still carry.
    if (w.has("position_ids")) w.skip?.("position_ids");
    return new CLIPTextEmbeddings(token, position);
  }

  /** ids [B, N] (u32) -> [B, N, D]; position ids are 0..N-1. */
  forward(ids: Tensor): Tensor {
    const n = ids.dim(-1);
    const maxPositions = this.position_embedding.dim(0);
    if (n > maxPositions) throw new SsdError("E_SHAPE", `CLIP text: ${n} tokens but the model has ${maxPositions} positions`);
    const tokens = ops.gather(this.token_embedding, ids);
    const positions = n === maxPositions ? this.position_embedding : ops.slice(this.position_embedding, 0, 0, n);
    const h = ops.add(tokens, positions);
    tokens.dispose();
    if (positions !== this.position_embedding) positions.dispose();
    return h;
  }
}

/** Multi-head self-attention with q_proj/k_proj/v_proj/out_proj; causal, optionally with a key padding mask. */
export class CLIPAttention {
  readonly headDim: number;
  readonly scale: number;
  constructor(
    readonly heads: number,
    readonly q_proj: Linear,
    readonly k_proj: Linear,
    readonly v_proj: Linear,
    readonly out_proj: Linear,
  ) {
    this.headDim = q_proj.outFeatures / heads;
    this.scale = this.headDim ** -0.5;
  }

  static async load(w: WeightSource, cfg: CLIPTextConfig): Promise<CLIPAttention> {
    const d = cfg.hidden_size;
    return new CLIPAttention(
      cfg.num_attention_heads,
      await loadLinear(w.sub("q_proj"), d, d),
      await loadLinear(w.sub("k_proj"), d, d),
      await loadLinear(w.sub("v_proj"), d, d),
      await loadLinear(w.sub("out_proj"), d, d),
    );
  }

  /**
   * x [B, N, D] -> [B, N, D]. `keyMask` ([B][N], 1 = attend, 0 = padding) is the
   * tokenizer's attention_mask; `residual` is added in out_proj's epilogue.
   */
  forward(x: Tensor, opts: { keyMask?: number[][]; residual?: Tensor } = {}): Tensor {
    const q = this.q_proj.forward(x);
    const k = this.k_proj.forward(x);
    const v = this.v_proj.forward(x);
    const a = opts.keyMask ? this.maskedAttention(q, k, v, opts.keyMask) : ops.attention(q, k, v, { heads: this.heads, causal: true, scale: this.scale });
    q.dispose(); k.dispose(); v.dispose();
    const y = this.out_proj.forward(a, undefined, opts.residual);
    a.dispose();
    return y;
  }

  /**
   * softmax(q·kᵀ·scale + causal + padding)·v with the scores materialised, as
   * transformers' eager path does; only used when an attention mask is given
   * (SDXL never passes one), and N is at most 77 there.
   */
  private maskedAttention(q: Tensor, k: Tensor, v: Tensor, keyMask: number[][]): Tensor {
    const e = q.engine;
    const [B, N] = [q.dim(0), q.dim(1)];
    const H = this.heads, d = this.headDim;
    if (keyMask.length !== B || keyMask.some((r) => r.length !== N)) {
      throw new SsdError("E_SHAPE", `CLIP text: attention mask of ${keyMask.length}×${keyMask[0]?.length ?? 0} for ids of ${B}×${N}`);
    }
    // [B, N, H*d] -> [B*H, N, d]
    const heads = (t: Tensor) => {
      const t4 = t.reshape([B, N, H, d]);
      const p = ops.permute(t4, [0, 2, 1, 3]);
      t4.dispose();
      return reshapeOwned(p, [B * H, N, d]);
    };
    const qh = heads(q), kh = heads(k), vh = heads(v);
    // Additive mask [B, 1, N, N]: causal above the diagonal, padding keys (finfo.min both, not summed to -inf).
    const mask = new Float32Array(B * N * N);
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < N; i++) {
        for (let j = 0; j < N; j++) mask[(b * N + i) * N + j] = j > i || !keyMask[b][j] ? FINFO_F32_MIN : 0;
      }
    }
    const maskT = e.upload(mask, [B, 1, N, N]);
    const qs = ops.scale(qh, this.scale);
    const scores = reshapeOwned(ops.matmul(qs, kh, { transB: true }), [B, H, N, N]);
    const masked = ops.add(scores, maskT);
    const probs = reshapeOwned(ops.softmax(masked), [B * H, N, N]);
    const ctx = reshapeOwned(ops.matmul(probs, vh), [B, H, N, d]);
    const out = reshapeOwned(ops.permute(ctx, [0, 2, 1, 3]), [B, N, H * d]);
    for (const t of [qh, kh, vh, maskT, qs, scores, masked, probs, ctx]) t.dispose();
    return out;
  }
}

export class CLIPMLP {
  constructor(readonly fc1: Linear, readonly fc2: Linear, readonly act: Activation) {}

  static async load(w: WeightSource, cfg: CLIPTextConfig): Promise<CLIPMLP> {
    return new CLIPMLP(
      await loadLinear(w.sub("fc1"), cfg.hidden_size, cfg.intermediate_size),
      await loadLinear(w.sub("fc2"), cfg.intermediate_size, cfg.hidden_size),
      activationFromConfig(cfg.hidden_act),
    );
  }

  /** fc2(act(fc1(x))) (+ residual), the activation fused into fc1's epilogue. */
  forward(x: Tensor, residual?: Tensor, trace?: Trace, name = "mlp"): Tensor {
    if (!trace) {
      const h = this.fc1.forward(x, this.act);
      const y = this.fc2.forward(h, undefined, residual);
      h.dispose();
      return y;
    }
    // Traced: the same arithmetic, unfused, so fc1 before the activation and the MLP before the residual can be seen.
    const f = this.fc1.forward(x);
    trace(`${name}.fc1`, f);
    const h = ops.unary(f, this.act);
    const m = this.fc2.forward(h);
    trace(name, m);
    const y = residual ? ops.add(residual, m) : m;
    f.dispose(); h.dispose();
    if (y !== m) m.dispose();
    return y;
  }
}

export class CLIPEncoderLayer {
  constructor(
    readonly layer_norm1: LayerNorm,
    readonly self_attn: CLIPAttention,
    readonly layer_norm2: LayerNorm,
    readonly mlp: CLIPMLP,
  ) {}

  static async load(w: WeightSource, cfg: CLIPTextConfig): Promise<CLIPEncoderLayer> {
    return new CLIPEncoderLayer(
      await loadLayerNorm(w.sub("layer_norm1"), cfg.layer_norm_eps, cfg.hidden_size),
      await CLIPAttention.load(w.sub("self_attn"), cfg),
      await loadLayerNorm(w.sub("layer_norm2"), cfg.layer_norm_eps, cfg.hidden_size),
      await CLIPMLP.load(w.sub("mlp"), cfg),
    );
  }

  /** Pre-LN block; the residual adds are fused into out_proj and fc2 unless traced. */
  forward(h: Tensor, keyMask?: number[][], trace?: Trace, name = ""): Tensor {
    const p = name ? `${name}.` : "";
    const x1 = this.layer_norm1.forward(h);
    trace?.(`${p}layer_norm1`, x1);
    let h1: Tensor;
    if (trace) {
      const a = this.self_attn.forward(x1, { keyMask });
      trace(`${p}self_attn`, a);
      h1 = ops.add(h, a);
      a.dispose();
    } else {
      h1 = this.self_attn.forward(x1, { keyMask, residual: h });
    }
    x1.dispose();
    const x2 = this.layer_norm2.forward(h1);
    trace?.(`${p}layer_norm2`, x2);
    const out = this.mlp.forward(x2, h1, trace, `${p}mlp`);
    x2.dispose();
    h1.dispose();
    return out;
  }
}

export class CLIPEncoder {
  constructor(readonly layers: CLIPEncoderLayer[]) {}

  static async load(w: WeightSource, cfg: CLIPTextConfig): Promise<CLIPEncoder> {
    const layers: CLIPEncoderLayer[] = [];
    for (let i = 0; i < cfg.num_hidden_layers; i++) layers.push(await CLIPEncoderLayer.load(w.sub(`layers.${i}`), cfg));
    return new CLIPEncoder(layers);
  }

  /** Returns every hidden state: [embeddings, after layer 1, ..., after the last layer]. */
  forward(h: Tensor, keyMask?: number[][], trace?: Trace, name = "encoder"): Tensor[] {
    const states = [h];
    this.layers.forEach((layer, i) => states.push(layer.forward(states[states.length - 1], keyMask, trace, `${name}.layers.${i}`)));
    return states;
  }
}

export interface CLIPTextTransformerOutput {
  /** final_layer_norm(last layer output) [B, N, D] */
  lastHiddenState: Tensor;
  /** lastHiddenState at the pooled positions [B, D] */
  pooledOutput: Tensor;
  /** embeddings output, then the output of each layer (before the final layer norm) [B, N, D] each */
  hiddenStates: Tensor[];
  /** position pooled for each row */
  pooledIndex: number[];
}

export class CLIPTextTransformer {
  constructor(
    readonly config: CLIPTextConfig,
    readonly embeddings: CLIPTextEmbeddings,
    readonly encoder: CLIPEncoder,
    readonly final_layer_norm: LayerNorm,
  ) {}

  static async load(w: WeightSource, cfg: CLIPTextConfig): Promise<CLIPTextTransformer> {
    return new CLIPTextTransformer(
      cfg,
      await CLIPTextEmbeddings.load(w.sub("embeddings"), cfg),
      await CLIPEncoder.load(w.sub("encoder"), cfg),
      await loadLayerNorm(w.sub("final_layer_norm"), cfg.layer_norm_eps, cfg.hidden_size),
    );
  }

  /**
   * The position each row is pooled at, as transformers picks it: configs with
   * eos_token_id == 2 (the legacy value the SDXL checkpoints carry) take the
   * argmax of the ids (the first occurrence of the largest, 49407 = EOS in
   * CLIP's vocabulary); others the first occurrence of eos_token_id (0 when absent).
   */
  pooledIndex(ids: readonly number[]): number {
    let best = 0;
    if (this.config.eos_token_id === 2) {
      for (let i = 1; i < ids.length; i++) if (ids[i] > ids[best]) best = i;
      return best;
    }
    const at = ids.indexOf(this.config.eos_token_id);
    return at < 0 ? 0 : at;
  }

  forward(inputIds: readonly (readonly number[])[], opts: { attentionMask?: number[][]; trace?: Trace; name?: string } = {}): CLIPTextTransformerOutput {
    const B = inputIds.length;
    const N = inputIds[0]?.length ?? 0;
    if (B === 0 || N === 0 || inputIds.some((r) => r.length !== N)) throw new SsdError("E_SHAPE", "CLIP text: input ids must be a non-empty rectangle of token ids");
    const V = this.config.vocab_size;
    const flat = new Uint32Array(B * N);
    inputIds.forEach((row, b) => row.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new SsdError("E_BAD_PARAM", `CLIP text: token id ${id} is outside the vocabulary (0..${V - 1})`);
      flat[b * N + i] = id;
    }));
    const name = opts.name ?? "text_model";
    const e = this.embeddings.token_embedding.engine;
    const ids = e.upload(flat, [B, N], "u32");
    const h0 = this.embeddings.forward(ids);
    ids.dispose();
    const hiddenStates = this.encoder.forward(h0, opts.attentionMask, opts.trace, `${name}.encoder`);
    const last = this.final_layer_norm.forward(hiddenStates[hiddenStates.length - 1]);
    const pooledIndex = inputIds.map((row) => this.pooledIndex(row));
    const flatLast = last.reshape([B * N, last.dim(-1)]);
    const pooledOutput = ops.selectRows(flatLast, pooledIndex.map((p, b) => b * N + p));
    flatLast.dispose();
    return { lastHiddenState: last, pooledOutput, hiddenStates, pooledIndex };
  }
}

export interface CLIPTextModelOutput extends CLIPTextTransformerOutput {
  /** text_projection(pooledOutput) [B, projection_dim], for CLIPTextModelWithProjection */
  textEmbeds?: Tensor;
}

/**
 * CLIPTextModel, or CLIPTextModelWithProjection when the config's architecture
 * says so (or the checkpoint has `text_projection.weight`).
 */
export class CLIPTextModel {
  constructor(
    readonly config: CLIPTextConfig,
    readonly text_model: CLIPTextTransformer,
    readonly text_projection: Linear | undefined,
  ) {}

  get withProjection(): boolean {
    return this.text_projection !== undefined;
  }

  static async load(w: WeightSource, cfg: CLIPTextConfig): Promise<CLIPTextModel> {
    const text_model = await CLIPTextTransformer.load(w.sub("text_model"), cfg);
    const arch = cfg.architectures ?? [];
    const wantsProjection = arch.includes("CLIPTextModelWithProjection") || (!arch.includes("CLIPTextModel") && w.has("text_projection.weight"));
    const text_projection = wantsProjection ? await loadLinear(w.sub("text_projection"), cfg.hidden_size, cfg.projection_dim, false) : undefined;
    return new CLIPTextModel(cfg, text_model, text_projection);
  }

  /** Loads a transformers folder (`config.json` + safetensors weights), e.g. `text_encoder_2/`. */
  static async fromPretrained(dir: string, opts: WeightStoreOptions & { warn?: (m: string) => void } = {}): Promise<CLIPTextModel> {
    return WeightStore.loadModel(dir, parseCLIPTextConfig, (store, cfg) => CLIPTextModel.load(store, cfg), { ...opts });
  }


  /**
   * `model(input_ids, attention_mask=None, output_hidden_states=True)`. The
   * attention mask is optional and SDXL never passes one.
   */
  forward(inputIds: readonly (readonly number[])[], opts: { attentionMask?: number[][]; trace?: Trace } = {}): CLIPTextModelOutput {
    const out: CLIPTextModelOutput = this.text_model.forward(inputIds, { ...opts, name: "text_model" });
    if (this.text_projection) out.textEmbeds = this.text_projection.forward(out.pooledOutput);
    return out;
  }
}
