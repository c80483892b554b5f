// Serial split-K for the `wide` GEMM core: the K parts of a block add their
// sums inside the GEMM's own dispatch, with no second pass (included after
// wide_tile by kernels that declare `W: array<atomic<u32>>` and, before
// wide_tile, the overrides KSPLIT and WSK_RECHECK: conv2d.wgsl's
// conv2d_wide_sk and conv2d_wide_st, matmul.wgsl's wide_ser). On an H200 it
// beat a narrower tile on small conv grids, and lost to a second pass
// (matmul's split_sum) on GEMMs of short K (README).
//
//   W[0 .. tiles·threads)    a counter per thread of each block of C (batch
//                            included)
//   W[P.sw + (tile·KSPLIT + s)·64·threads ..]
//                            part s's slot: word (4 j + c)·threads + tid holds
//                            component c of thread tid's wide_acc[j], so a
//                            warp's stores are consecutive words
//
// Thread by thread (a thread's outputs are the same C elements in every part,
// so no barrier is needed): every part stores its sums in its slot, then
// counts itself in at the thread's counter. The part that counts last adds
// the parts' sums in part order (the sum is the same whichever part came
// last) and stores its outputs with the epilogue; the others are done. Each
// word is written once per dispatch, then read and cleared by the taker
// (its own words too: a thread's own atomic stores are visible to its later
// loads of the same word), so the taker needs no ordering between other
// workgroups' memory operations, only that a word's store becomes visible to
// atomicLoad on that word (WGSL's atomics are relaxed): a word holds bits(v)
// XOR WSK_KEY, 0 meaning "not yet written", and the taker re-reads a word
// until it is non-zero, then writes 0. The words of a slot are stored before
// its part counts itself in, so a taker only ever waits on stores already
// made, never on a workgroup that has not run: no forward-progress
// assumption. WSK_KEY is a signalling-NaN pattern,
// which no floating-point operation produces (GPUs and x86 return quiet NaNs),
// so a stored sum never reads as 0. The taker leaves its words of the
// block's slots 0 and its counter 0: the buffer (zeroed when created) is ready
// for the next dispatch, which Dawn and wgpu order after this one.
const WSK_KEY: u32 = 0x7f80deadu;
// a bound on re-reads of one word, so a broken driver cannot hang the GPU
const WSK_SPIN: u32 = 1048576u;

fn wsk_word(base: u32, tid: u32, w: u32) -> u32 { return base + w * GW_X * GW_Y + tid; }

// wide_acc[j], and its update, with j reached through a switch: indexed
// dynamically, a compiler may keep the whole accumulator in memory rather
// than registers, for the whole kernel and not only for the blocks that come
// here (an earlier version that copied wide_acc into arrays indexed
// dynamically ran the GEMMs with a serial tail 2 to 4 times slower than the
// same GEMM without one on an H200, whole blocks included).
fn wsk_get(j: u32) -> vec4<f32> {
  switch (j) {
    case 0u: { return wide_acc[0]; }
    case 1u: { return wide_acc[1]; }
    case 2u: { return wide_acc[2]; }
    case 3u: { return wide_acc[3]; }
    case 4u: { return wide_acc[4]; }
    case 5u: { return wide_acc[5]; }
    case 6u: { return wide_acc[6]; }
    case 7u: { return wide_acc[7]; }
    case 8u: { return wide_acc[8]; }
    case 9u: { return wide_acc[9]; }
    case 10u: { return wide_acc[10]; }
    case 11u: { return wide_acc[11]; }
    case 12u: { return wide_acc[12]; }
    case 13u: { return wide_acc[13]; }
    case 14u: { return wide_acc[14]; }
    default: { return wide_acc[15]; }
  }
}
fn wsk_set(j: u32, v: vec4<f32>) {
  switch (j) {
    case 0u: { wide_acc[0] = v; }
    case 1u: { wide_acc[1] = v; }
    case 2u: { wide_acc[2] = v; }
    case 3u: { wide_acc[3] = v; }
    case 4u: { wide_acc[4] = v; }
    case 5u: { wide_acc[5] = v; }
    case 6u: { wide_acc[6] = v; }
    case 7u: { wide_acc[7] = v; }
    case 8u: { wide_acc[8] = v; }
    case 9u: { wide_acc[9] = v; }
    case 10u: { wide_acc[10] = v; }
    case 11u: { wide_acc[11] = v; }
    case 12u: { wide_acc[12] = v; }
    case 13u: { wide_acc[13] = v; }
    case 14u: { wide_acc[14] = v; }
    default: { wide_acc[15] = v; }
  }
}

// The four words of accumulator j in the slot from `base` (component c at
// word 4 j + c): written (wsk_put), a sum stored, loaded once each (0 where
// a word is not yet visible), loaded until each holds a sum, cleared. Four
// words per call, so the loads of a call are issued together rather than
// each waited for before the next.
fn wsk_put(base: u32, tid: u32, j: u32, u: vec4<u32>) {
  let i = wsk_word(base, tid, 4u * j);
  let t = GW_X * GW_Y;
  atomicStore(&W[i], u.x);
  atomicStore(&W[i + t], u.y);
  atomicStore(&W[i + 2u * t], u.z);
  atomicStore(&W[i + 3u * t], u.w);
}
fn wsk_store(base: u32, tid: u32, j: u32, v: vec4<f32>) { wsk_put(base, tid, j, bitcast<vec4<u32>>(v) ^ vec4<u32>(WSK_KEY)); }
fn wsk_load(base: u32, tid: u32, j: u32) -> vec4<u32> {
  let i = wsk_word(base, tid, 4u * j);
  let t = GW_X * GW_Y;
  return vec4<u32>(atomicLoad(&W[i]), atomicLoad(&W[i + t]), atomicLoad(&W[i + 2u * t]), atomicLoad(&W[i + 3u * t]));
}
fn wsk_wait(base: u32, tid: u32, j: u32) -> vec4<u32> {
  var u = wsk_load(base, tid, j);
  for (var n = 0u; any(u == vec4<u32>(0u)) && n < WSK_SPIN; n++) {
    u = select(u, wsk_load(base, tid, j), u == vec4<u32>(0u));
  }
  return u;
}
fn wsk_clear(base: u32, tid: u32, j: u32) { wsk_put(base, tid, j, vec4<u32>(0u)); }
fn wsk_sum(u: vec4<u32>) -> vec4<f32> { return bitcast<vec4<f32>>(u ^ vec4<u32>(WSK_KEY)); }

// Thread tid of part s of block `tile`, after wide_gemm: true if it counts in
// last (its wide_acc then holds the whole sums, and the caller stores its
// outputs), false if not.
//
// The taker gathers an accumulator at a time: every part's four words
// loaded without waiting and added in part order, which is the whole story
// unless a word was still 0 (another part's store made but not yet visible
// here), when the accumulator is gathered again, each word waited for, and
// then its words are cleared. Measured on an H200 (README): the first
// version, which waited for each word before loading the next (64 dependent
// loads per part and thread), took 7-25 % longer, and two that load more
// before clearing (all sixteen accumulators of every part, or four at a
// time) 5-6 % longer; all of them lose to a second pass (split tails) on
// 4096x1280x1280 there. The atomic operations stay in loops over j (and the four
// per call above) rather than written out like the rest of the core:
// written out, the 64 atomic operations per slot (each a loop over lanes in
// Mesa's lavapipe) took lavapipe 20 s to compile, against 5 s for the kernel
// without them.
fn wide_serial(tid: u32, tile: u32, s: u32) -> bool {
  let per = 64u * GW_X * GW_Y;
  let first = P.sw + tile * KSPLIT * per;
  // accumulators j < 16, with GTN = 4 the even ones only
  let step = select(1u, 2u, GTN == 4u);
  for (var j = 0u; j < 16u; j += step) { wsk_store(first + s * per, tid, j, wsk_get(j)); }
  // counted in after its words are stored; thread by thread, since a thread
  // adds only what the same thread of the other parts stored
  let counter = tile * GW_X * GW_Y + tid;
  if (atomicAdd(&W[counter], 1u) != KSPLIT - 1u) { return false; }
  for (var j = 0u; j < 16u; j += step) {
    var v = vec4<f32>(0.0);
    var unseen = false;
    for (var p = 0u; p < KSPLIT; p++) {
      let u = wsk_load(first + p * per, tid, j);
      unseen = unseen | any(u == vec4<u32>(0u)); // no branch: the loads can all be in flight
      v += wsk_sum(u);
    }
    if (unseen || WSK_RECHECK) {
      v = vec4<f32>(0.0);
      for (var p = 0u; p < KSPLIT; p++) { v += wsk_sum(wsk_wait(first + p * per, tid, j)); }
    }
    for (var p = 0u; p < KSPLIT; p++) { wsk_clear(first + p * per, tid, j); }
    wsk_set(j, v);
  }
  atomicStore(&W[counter], 0u);
  return true;
}
