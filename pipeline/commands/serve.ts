// `ssd-depth serve`: the HTTP API (pipeline/server.ts). Prints the bound address
// on stdout once it accepts requests (so scripts and tests can read the port when
// --port 0 picked one); logs go to stderr. SIGTERM/SIGINT drain: the running job
// finishes, new ones get 503, then the process exits 0.

import type { CommandModule } from "yargs";
import { SsdError } from "../../engine/errors.ts";
import { SsdServer, SERVER_DEFAULTS } from "../server.ts";
import { DEFAULT_MODEL, DEFAULT_CONTROLNET, DEFAULT_DEPTH_MODEL } from "../generate.ts";

interface ServeArgs {
  model?: string;
  controlnet?: string;
  "depth-model"?: string;
  vae?: string;
  offline?: boolean;
  host: string;
  port: number;
  "api-key"?: string;
  queue: number;
  "allow-remote-images"?: boolean;
  lazy?: boolean;
  "max-body-mb": number;
  "max-image-mp": number;
  "client-timeout": number;
  "remote-timeout": number;
}

function positive(v: number, flag: string, integer = false): number {
  if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) throw new SsdError("E_BAD_PARAM", `${flag} must be a positive ${integer ? "integer" : "number"}, got ${v}`);
  return v;
}

export const serveCommand: CommandModule<{}, ServeArgs> = {
  command: "serve",
  describe: "HTTP API (Segmind's SSD-1B Depth fields): POST /v1/ssd-depth, async /v2, /health",
  builder: (y) => y
    .option("model", { type: "string", describe: `diffusers SDXL/SSD-1B folder or hub id (default ${DEFAULT_MODEL})` })
    .option("controlnet", { type: "string", describe: `depth ControlNet folder or hub id (default: <model>/controlnet, else ${DEFAULT_CONTROLNET})` })
    .option("depth-model", { type: "string", describe: `DPT / Depth Anything folder or hub id (default: <model>/depth, else ${DEFAULT_DEPTH_MODEL})` })
    .option("vae", { type: "string", describe: "another VAE folder or hub id" })
    .option("offline", { type: "boolean", describe: "never download (also HF_HUB_OFFLINE=1)" })
    .option("host", { type: "string", default: SERVER_DEFAULTS.host, describe: "address to bind (0.0.0.0 exposes the server to the network)" })
    .option("port", { type: "number", default: SERVER_DEFAULTS.port, describe: "port (0 = any free one; the address is printed)" })
    .option("api-key", { type: "string", describe: "require this x-api-key header on every request (env SSD_DEPTH_API_KEY)" })
    .option("queue", { type: "number", default: SERVER_DEFAULTS.queueSize, describe: "jobs that may wait behind the running one; more get 429" })
    .option("allow-remote-images", { type: "boolean", describe: "accept http(s) URLs in image/depth_image (fetched within the body size and --remote-timeout)" })
    .option("lazy", { type: "boolean", describe: "load the models on the first request instead of at start" })
    .option("max-body-mb", { type: "number", default: SERVER_DEFAULTS.maxBodyMb, describe: "request body limit in MB (413 above)" })
    .option("max-image-mp", { type: "number", default: SERVER_DEFAULTS.maxImageMp, describe: "largest input image in megapixels (400 above)" })
    .option("client-timeout", { type: "number", default: SERVER_DEFAULTS.clientTimeoutS, describe: "seconds a client has to send its request (408 after)" })
    .option("remote-timeout", { type: "number", default: SERVER_DEFAULTS.remoteTimeoutS, describe: "seconds to fetch a remote image" }) as any,
  handler: async (a) => {
    const log = (m: string) => console.error(m);
    const apiKey = a["api-key"] ?? process.env.SSD_DEPTH_API_KEY ?? null;
    const port = a.port;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new SsdError("E_BAD_PARAM", `--port must be 0..65535, got ${a.port}`);
    const server = new SsdServer({
      models: { model: a.model, controlnet: a.controlnet, depthModel: a["depth-model"], vae: a.vae, offline: a.offline },
      host: a.host,
      port,
      apiKey: apiKey || null,
      queueSize: positive(a.queue, "--queue", true),
      allowRemoteImages: !!a["allow-remote-images"],
      lazy: !!a.lazy,
      maxBodyBytes: Math.round(positive(a["max-body-mb"], "--max-body-mb") * 1e6),
      maxImagePixels: Math.round(positive(a["max-image-mp"], "--max-image-mp") * 1024 * 1024),
      clientTimeoutMs: Math.round(positive(a["client-timeout"], "--client-timeout") * 1000),
      remoteTimeoutMs: Math.round(positive(a["remote-timeout"], "--remote-timeout") * 1000),
      log,
    });
    const url = await server.start();
    const onSignal = (sig: string) => () => server.shutdown(`${sig} received`);
    const term = onSignal("SIGTERM"), int = onSignal("SIGINT");
    process.on("SIGTERM", term);
    process.on("SIGINT", int);
    if (!/^(127\.|::1$|localhost$)/.test(a.host) && !apiKey) log(`warning: listening on ${a.host} without an API key; anyone who can reach it can use the GPU (set --api-key)`);
    console.log(`ssd-depth server listening on ${url}${a.lazy ? " (models load on the first request)" : ""}`);
    await server.closed;
    process.off("SIGTERM", term);
    process.off("SIGINT", int);
    log("server stopped");
  },
};
