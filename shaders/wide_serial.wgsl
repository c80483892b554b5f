// Serial split-K for the `wide` GEMM core: the K parts of a block add their
// sums inside the GEMM's own dispatch, with no second pass (included after
// wide_tile by kernels that declare `W: array<atomic<u32>>` and KSPLIT:
// conv2d.wgsl's conv2d_wide_sk). On an H200 it beat a narrower tile on
// small conv grids, and lost to a second pass (matmul's split_sum) on GEMMs
// of short K (README).
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
// word is written once per dispatch, then read (unless it is the taker's
// own) and cleared by the taker, so the taker needs no
// ordering between other workgroups' memory operations, only that a word's
// store becomes visible to atomicLoad on that word (WGSL's atomics are
// relaxed): a word holds bits(v) XOR WSK_KEY, 0 meaning "not yet written",
// and the taker reads each word until it is non-zero, then writes 0. The
// words of a slot are stored before its part counts itself in, so a taker
// only ever waits on stores already made, never on a workgroup that has not
// run: no forward-progress assumption. WSK_KEY is a signalling-NaN pattern,
// which no floating-point operation produces (GPUs and x86 return quiet NaNs),
// so a stored sum never reads as 0. The taker leaves its words of the
// block's slots 0 and its counter 0: the buffer (zeroed when created) is ready
// for the next dispatch, which Dawn and wgpu order after this one.
const WSK_KEY: u32 = 0x7f80deadu;
// a bound on re-reads of one word, so a broken driver cannot hang the GPU
const WSK_SPIN: u32 = 1048576u;

fn wsk_word(base: u32, tid: u32, w: u32) -> u32 { return base + w * GW_X * GW_Y + tid; }

// Component w % 4 of wide_acc[w / 4], and its update. wide_acc is indexed by
// constants only (a switch on the vec4, selects within it): indexed
// dynamically, a compiler may keep the whole accumulator in memory rather
// than registers, for the whole kernel and not only for the blocks that
// come here.
fn wsk_pick(v: vec4<f32>, c: u32) -> f32 { return select(select(v.x, v.y, c == 1u), select(v.z, v.w, c == 3u), c >= 2u); }
fn wsk_get(w: u32) -> f32 {
  let c = w % 4u;
  switch (w / 4u) {
    case 0u: { return wsk_pick(wide_acc[0], c); }
    case 1u: { return wsk_pick(wide_acc[1], c); }
    case 2u: { return wsk_pick(wide_acc[2], c); }
    case 3u: { return wsk_pick(wide_acc[3], c); }
    case 4u: { return wsk_pick(wide_acc[4], c); }
    case 5u: { return wsk_pick(wide_acc[5], c); }
    case 6u: { return wsk_pick(wide_acc[6], c); }
    case 7u: { return wsk_pick(wide_acc[7], c); }
    case 8u: { return wsk_pick(wide_acc[8], c); }
    case 9u: { return wsk_pick(wide_acc[9], c); }
    case 10u: { return wsk_pick(wide_acc[10], c); }
    case 11u: { return wsk_pick(wide_acc[11], c); }
    case 12u: { return wsk_pick(wide_acc[12], c); }
    case 13u: { return wsk_pick(wide_acc[13], c); }
    case 14u: { return wsk_pick(wide_acc[14], c); }
    default: { return wsk_pick(wide_acc[15], c); }
  }
}
fn wsk_put(v: vec4<f32>, c: u32, x: f32) -> vec4<f32> { return select(v, vec4<f32>(x), vec4<u32>(0u, 1u, 2u, 3u) == vec4<u32>(c)); }
fn wsk_set(w: u32, x: f32) {
  let c = w % 4u;
  switch (w / 4u) {
    case 0u: { wide_acc[0] = wsk_put(wide_acc[0], c, x); }
    case 1u: { wide_acc[1] = wsk_put(wide_acc[1], c, x); }
    case 2u: { wide_acc[2] = wsk_put(wide_acc[2], c, x); }
    case 3u: { wide_acc[3] = wsk_put(wide_acc[3], c, x); }
    case 4u: { wide_acc[4] = wsk_put(wide_acc[4], c, x); }
    case 5u: { wide_acc[5] = wsk_put(wide_acc[5], c, x); }
    case 6u: { wide_acc[6] = wsk_put(wide_acc[6], c, x); }
    case 7u: { wide_acc[7] = wsk_put(wide_acc[7], c, x); }
    case 8u: { wide_acc[8] = wsk_put(wide_acc[8], c, x); }
    case 9u: { wide_acc[9] = wsk_put(wide_acc[9], c, x); }
    case 10u: { wide_acc[10] = wsk_put(wide_acc[10], c, x); }
    case 11u: { wide_acc[11] = wsk_put(wide_acc[11], c, x); }
    case 12u: { wide_acc[12] = wsk_put(wide_acc[12], c, x); }
    case 13u: { wide_acc[13] = wsk_put(wide_acc[13], c, x); }
    case 14u: { wide_acc[14] = wsk_put(wide_acc[14], c, x); }
    default: { wide_acc[15] = wsk_put(wide_acc[15], c, x); }
  }
}

// Thread tid of part s of block `tile`, after wide_gemm: true if it counts in
// last (its wide_acc then holds the whole sums, and the caller stores its
// outputs), false if not.
//
// The words go through loops over w (and wsk_get / wsk_set), not written out
// like the rest of the core: written out, the 64 atomic operations per slot
// (each a loop over lanes in Mesa's lavapipe) took lavapipe 20 s to compile,
// against 5 s for the kernel without them. An earlier version copied
// wide_acc into two arrays indexed dynamically (its own sums and the total):
// on an H200 the GEMMs with a serial tail then ran 2 to 4 times slower than
// the same GEMM without one, whole blocks included.
fn wide_serial(tid: u32, tile: u32, s: u32) -> bool {
  let per = 64u * GW_X * GW_Y;
  let first = P.sw + tile * KSPLIT * per;
  // accumulators j < 16, with GTN = 4 the even ones only
  let used = select(0xffffu, 0x5555u, GTN == 4u);
  for (var w = 0u; w < 64u; w++) {
    if ((used & (1u << (w / 4u))) == 0u) { continue; }
    atomicStore(&W[wsk_word(first + s * per, tid, w)], bitcast<u32>(wsk_get(w)) ^ WSK_KEY);
  }
  // counted in after its words are stored; thread by thread, since a thread
  // adds only what the same thread of the other parts stored
  let counter = tile * GW_X * GW_Y + tid;
  if (atomicAdd(&W[counter], 1u) != KSPLIT - 1u) { return false; }
  // each output the parts' sums in part order (the result does not depend on
  // which part came last): this part's own from registers, the others' words
  // each waited for (stored before their part counted in, so this waits on
  // no workgroup that has yet to run); every word of the block's slots
  // cleared for the next dispatch
  for (var w = 0u; w < 64u; w++) {
    if ((used & (1u << (w / 4u))) == 0u) { continue; }
    let own = wsk_get(w);
    var v = 0.0;
    for (var p = 0u; p < KSPLIT; p++) {
      let i = wsk_word(first + p * per, tid, w);
      var x = own;
      if (p != s) {
        var u = atomicLoad(&W[i]);
        for (var n = 0u; u == 0u && n < WSK_SPIN; n++) { u = atomicLoad(&W[i]); }
        x = bitcast<f32>(u ^ WSK_KEY);
      }
      atomicStore(&W[i], 0u);
      v += x;
    }
    wsk_set(w, v);
  }
  atomicStore(&W[counter], 0u);
  return true;
}
