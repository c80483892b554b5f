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

// Thread tid of part s of block `tile`, after wide_gemm: true if it counts in
// last (its wide_acc then holds the whole sums, and the caller stores its
// outputs), false if not.
//
// The words go through copies of wide_acc in loops, not written out like the
// rest of the core: written out, the 64 atomic operations per slot (each a
// loop over lanes in Mesa's lavapipe) took lavapipe 20 s to compile, against
// 5 s for the kernel without them. Only the copies are indexed dynamically.
fn wide_serial(tid: u32, tile: u32, s: u32) -> bool {
  let per = 64u * GW_X * GW_Y;
  let first = P.sw + tile * KSPLIT * per;
  // accumulators j < 16, with GTN = 4 the even ones only
  let used = select(0xffffu, 0x5555u, GTN == 4u);
  var own = wide_acc;
  for (var w = 0u; w < 64u; w++) {
    if ((used & (1u << (w / 4u))) == 0u) { continue; }
    atomicStore(&W[wsk_word(first + s * per, tid, w)], bitcast<u32>(own[w / 4u][w % 4u]) ^ WSK_KEY);
  }
  // counted in after its words are stored; thread by thread, since a thread
  // adds only what the same thread of the other parts stored
  let counter = tile * GW_X * GW_Y + tid;
  if (atomicAdd(&W[counter], 1u) != KSPLIT - 1u) { return false; }
  // the parts' sums in part order (the result does not depend on which
  // part came last): this part's own from registers,
  // the others' words each waited for (stored before their part counted in,
  // so this waits on no workgroup that has yet to run); every word of the
  // block's slots cleared for the next dispatch
  var v = array<vec4<f32>, 16>();
  for (var p = 0u; p < KSPLIT; p++) {
    for (var w = 0u; w < 64u; w++) {
      if ((used & (1u << (w / 4u))) == 0u) { continue; }
      let i = wsk_word(first + p * per, tid, w);
      var x = own[w / 4u][w % 4u];
      if (p != s) {
        var u = atomicLoad(&W[i]);
        for (var n = 0u; u == 0u && n < WSK_SPIN; n++) { u = atomicLoad(&W[i]); }
        x = bitcast<f32>(u ^ WSK_KEY);
      }
      atomicStore(&W[i], 0u);
      v[w / 4u][w % 4u] += x;
    }
  }
  atomicStore(&W[counter], 0u);
  wide_acc = v;
  return true;
}
