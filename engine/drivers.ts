// Where the CPU Vulkan drivers live on Debian-like systems. Used by engine/device
// to find a driver without the user setting VK_ICD_FILENAMES, and by the test
// runner to run each leg on a chosen driver.

import { existsSync, readdirSync } from "node:fs";

const ICD_DIRS = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d"];

const SWIFTSHADER_ICDS = [
  "/usr/lib/chromium/vk_swiftshader_icd.json", // Debian's chromium
  "/usr/lib/chromium-browser/vk_swiftshader_icd.json", // Ubuntu
  "/opt/google/chrome/vk_swiftshader_icd.json", // Google Chrome
  "/usr/lib64/chromium-browser/vk_swiftshader_icd.json", // Fedora
];

export type CpuDriver = "lavapipe" | "swiftshader";

/** The ICD json of a CPU driver, or null when it is not installed. */
export function findIcd(driver: string): string | null {
  if (driver === "lavapipe") {
    for (const d of ICD_DIRS) {
      if (!existsSync(d)) continue;
      for (const f of readdirSync(d)) if (/^lvp_icd.*\.json$/.test(f)) return `${d}/${f}`;
    }
    return null;
  }
  if (driver === "swiftshader") {
    for (const p of SWIFTSHADER_ICDS) if (existsSync(p)) return p;
    for (const d of ICD_DIRS) {
      if (!existsSync(d)) continue;
      for (const f of readdirSync(d)) if (/swiftshader.*\.json$/i.test(f)) return `${d}/${f}`;
    }
    return null;
  }
  return null;
}

export const INSTALL_HINT = [
  "No usable WebGPU adapter was found. ssd-depth needs a Vulkan driver (a GPU's, or a CPU one).",
  "On Debian 12 as root, install Mesa 25's lavapipe (the fastest CPU driver):",
  "  echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/backports.list",
  "  apt-get update && apt-get install -y libvulkan1 && apt-get install -y -t bookworm-backports mesa-vulkan-drivers",
  "or SwiftShader (slower, comes with Chromium): apt-get install -y chromium",
  "(bookworm's own Mesa 22.3 lavapipe is refused by Dawn; Deno's wgpu accepts it.)",
  "With a GPU, install its Vulkan driver. To pick an adapter: --adapter NAME or SSD_DEPTH_ADAPTER=NAME.",
].join("\n");
