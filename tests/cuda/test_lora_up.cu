// The up projection on tensor cores (kernels/cuda/lora_up_mma.cuh) at padded rank 8..64 against a
// double reference on the host:
//   y = s xa B^T (written, or added onto y0),  dB^T0 + s xa^T dy,  dxa = s dy B.
// bf16 outputs are rounded once (tolerance 1e-2 relative L2), dB^T is fp32 summed in another order
// (1e-5). A fragment or column mapping off by one element would miss by ~1 relative. Shapes cover
// T not a multiple of 16, widths with a partial last 64-column strip (1000: 40 columns) and with one
// or several 512-column groups (the backward's partial sums), a grid where warps cross strips, and
// a one-token batch; rows past T (poisoned) must stay unwritten. Rank 8 at every shape; 16, 32, 64
// (even rank groups: k16 pairs, wide xa loads) at most and 24, 40 (odd: a k8 slice, 2-byte loads)
// at one each. Not small: the 7B's shapes timed against the cuBLASLt products they replace.
#include "cuda_test.cuh"
#include "peft/kernels/cuda/gemm.cuh"
#include "peft/kernels/cuda/lora_up_mma.cuh"

namespace peft::cuda_test {
namespace {

void check_shape(TestContext& t, cuda::DeviceArena& arena, int T, int out, float s, int rp = 8) {
  const std::string label = "rp=" + std::to_string(rp) + " T=" + std::to_string(T) + " out=" + std::to_string(out);
  const std::size_t ny = static_cast<std::size_t>(T) * out, nb = static_cast<std::size_t>(rp) * out,
                    nx = static_cast<std::size_t>(T) * rp;
  const Floats xa = t.normal(nx), bt = t.normal(nb, 0.05f), dy = t.normal(ny), y0 = t.normal(ny, 0.1f),
               dbt0 = t.normal_f32(nb, 0.1f);
  Floats y_ref(ny), y_acc_ref(ny), y_acc_mag(ny), dxa_ref(nx), dbt_ref(dbt0);
  for (int tk = 0; tk < T; ++tk)
    for (int c = 0; c < out; ++c) {
      double v = 0, mag = 0;
      for (int r = 0; r < rp; ++r) {
        const double term = static_cast<double>(xa[tk * rp + r]) * bt[static_cast<std::size_t>(r) * out + c];
        v += term;
        mag += std::abs(term);
      }
      const std::size_t e = static_cast<std::size_t>(tk) * out + c;
      y_ref[e] = static_cast<float>(s * v);
      y_acc_ref[e] = static_cast<float>(y0[e] + s * v);
      y_acc_mag[e] = static_cast<float>(std::abs(y0[e]) + std::abs(s) * mag);  // the terms' size: fp32 sums err by ~2^-24 of it
    }
  for (int tk = 0; tk < T; ++tk)
    for (int r = 0; r < rp; ++r) {
      double v = 0;
      for (int c = 0; c < out; ++c)
        v += static_cast<double>(dy[static_cast<std::size_t>(tk) * out + c]) * bt[static_cast<std::size_t>(r) * out + c];
      dxa_ref[tk * rp + r] = static_cast<float>(s * v);
    }
  for (int r = 0; r < rp; ++r)
    for (int c = 0; c < out; ++c) {
      double v = 0;
      for (int tk = 0; tk < T; ++tk) v += static_cast<double>(xa[tk * rp + r]) * dy[static_cast<std::size_t>(tk) * out + c];
      dbt_ref[static_cast<std::size_t>(r) * out + c] = static_cast<float>(dbt0[static_cast<std::size_t>(r) * out + c] + s * v);
    }
  auto *d_xa = upload_bf16(arena, xa), *d_bt = upload_bf16(arena, bt), *d_dy = upload_bf16(arena, dy);
  const std::size_t tail = static_cast<std::size_t>(16) * out;  // 16 rows past T: must stay poisoned
  auto unwritten_tail = [&](const bf16* d) {
    const Floats all = download_bf16(d, ny + tail);
    std::size_t written = 0;
    for (std::size_t i = ny; i < ny + tail; ++i) written += std::isfinite(all[i]);
    return written == 0;
  };

  auto* y = alloc_poisoned<bf16>(arena, ny + tail);
  cuda::lora_up_forward(y, d_xa, d_bt, rp, T, out, s, false, 0);
  t.close(label + ": y = s xa B^T", download_bf16(y, ny), y_ref, 1e-2);
  t.expect(unwritten_tail(y), label + ": forward wrote no row past T");
  auto* ya = alloc_poisoned<bf16>(arena, ny + tail);
  PEFT_CUDA_CHECK(cudaMemcpy(ya, upload_bf16(arena, y0), ny * 2, cudaMemcpyDeviceToDevice));
  cuda::lora_up_forward(ya, d_xa, d_bt, rp, T, out, s, true, 0);
  t.close(label + ": y += s xa B^T", download_bf16(ya, ny), y_acc_ref, 1e-2);
  {  // element by element: the term rounded to bf16, then added to y and rounded (cuBLASLt's and HF's
     // order), so within one bf16 step of that from the double reference, plus one of the term's
     // (its fp32 sum may round the other way) and the fp32 sums' own error, ~2^-24 of the terms'
     // size; a wrong row or column would be off by the values themselves
    const Floats got = download_bf16(ya, ny);
    std::size_t far = 0;
    for (std::size_t e = 0; e < ny; ++e) {
      const float term = round_to_bf16(y_ref[e]), ref = round_to_bf16(y0[e] + term);
      const float step = (std::abs(ref) + std::abs(term)) * (1.0f / 128.0f) + y_acc_mag[e] * (1.0f / 65536.0f);
      far += std::abs(got[e] - ref) > 1.01f * step;
    }
    t.expect(far == 0, label + ": y += s xa B^T within one bf16 step everywhere (" + std::to_string(far) + " beyond)");
  }
  t.expect(unwritten_tail(ya), label + ": accumulating forward wrote no row past T");

  const std::size_t floats = cuda::lora_up_backward_scratch_floats(T, out, rp);
  auto* scratch = floats ? alloc_poisoned<float>(arena, floats) : nullptr;
  auto* dxa = alloc_poisoned<bf16>(arena, nx + 16u * rp);
  auto* dbt = upload_f32(arena, dbt0);
  cuda::lora_up_backward(dbt, dxa, d_dy, d_xa, d_bt, rp, T, out, s, scratch, 0);
  const std::string groups = " (" + std::to_string((out + 511) / 512) + " column groups)";
  t.close(label + groups + ": dxa = s dy B", download_bf16(dxa, nx), dxa_ref, 1e-2);
  t.close(label + ": dB^T += s xa^T dy", download_f32(dbt, nb), dbt_ref, 1e-5);
  const Floats dxa_all = download_bf16(dxa, nx + 16u * rp);
  std::size_t written = 0;
  for (std::size_t i = nx; i < dxa_all.size(); ++i) written += std::isfinite(dxa_all[i]);
  t.expect(written == 0, label + ": backward wrote no dxa row past T");
}

// What the kernels refuse rather than run wrongly: a width that is not a multiple of 8, missing
// scratch, a padded rank that is not 8..64 in steps of 8.
void refusals(TestContext& t, cuda::DeviceArena& arena) {
  auto* buf = arena.alloc<bf16>(4096, "buffer");
  auto refused = [&](const std::string& what, auto&& fn) {
    bool threw = false;
    try {
      fn();
    } catch (const Error& e) {
      threw = std::string(e.what()).find("lora_up") != std::string::npos;
    }
    t.expect(threw, what);
  };
  refused("width 100 refused", [&] { cuda::lora_up_forward(buf, buf, buf, 8, 4, 100, 1.0f, false, 0); });
  refused("backward without its scratch refused",
          [&] { cuda::lora_up_backward(nullptr, buf, buf, buf, buf, 8, 4, 1024, 1.0f, nullptr, 0); });
  for (const int rp : {0, 4, 72}) {
    t.expect(!cuda::lora_up_fits(rp, 1024, buf, buf), "padded rank " + std::to_string(rp) + " does not fit");
    refused("padded rank " + std::to_string(rp) + " refused",
            [&] { cuda::lora_up_forward(buf, buf, buf, rp, 4, 64, 1.0f, false, 0); });
  }
  bool all_fit = true;
  for (int rp = 8; rp <= 64; rp += 8) all_fit = all_fit && cuda::lora_up_fits(rp, 1024, buf, buf);
  t.expect(all_fit, "padded ranks 8, 16, ..., 64 fit");
}

// GPU time a call of `fn` in a stream of them (10 back to back between the events: launch gaps
// hidden, as in the model's graph-captured step), in microseconds.
template <class Fn>
double us_a_call(Fn&& fn) {
  return 1e3 * median_ms([&] {
    for (int i = 0; i < 10; ++i) fn();
  }) / 10.0;
}

// One projection's up-projection products at T tokens: cuBLASLt (as lora_linear.cuh called them)
// against these kernels, then the kernels' grid knobs.
void time_shape(cuda::DeviceArena& arena, cuda::Gemm& gemm, const char* name, int T, int out, int rp = 8) {
  const std::size_t ny = static_cast<std::size_t>(T) * out, nr = static_cast<std::size_t>(rp) * out,
                    nx = static_cast<std::size_t>(T) * rp;
  auto *y = arena.alloc<bf16>(ny, "y / dy"), *bt = arena.alloc<bf16>(nr, "B^T"), *xa = arena.alloc<bf16>(nx, "xa"),
       *dxa = arena.alloc<bf16>(nx, "dxa");
  auto* dbt = arena.alloc<float>(nr, "dB^T");
  auto* scratch = arena.alloc<float>(std::max<std::size_t>(cuda::lora_up_backward_scratch_floats(T, out, rp), 1), "partials");
  fill_random_bf16(y, ny, 6u, 1.0f);
  fill_random_bf16(bt, nr, 7u, 0.05f);
  fill_random_bf16(xa, nx, 8u, 1.0f);
  fill_random_f32(dbt, nr, 9u, 0.1f);
  const double up = us_a_call([&] { gemm.matmul(y, out, xa, rp, false, bt, out, false, T, out, rp, 0.5f, 0.0f, nullptr, 0); });
  const double back = us_a_call([&] {
    gemm.matmul(dbt, out, xa, rp, true, y, out, false, rp, out, T, 0.5f, 1.0f, nullptr, 0);
    gemm.matmul(dxa, rp, y, out, false, bt, out, true, T, rp, out, 0.5f, 0.0f, nullptr, 0);
  });
  auto forward = [&] { cuda::lora_up_forward(y, xa, bt, rp, T, out, 0.5f, false, 0); };
  auto backward = [&] { cuda::lora_up_backward(dbt, dxa, y, xa, bt, rp, T, out, 0.5f, scratch, 0); };
  const double up_tc = us_a_call(forward), back_tc = us_a_call(backward);
  const double mb = static_cast<double>(ny) * 2 / 1e6;
  std::printf("  timing %s rp=%d T=%d out=%d (y / dy %.1f MB), us a call in a stream of them: forward y = s xa B^T "
              "cuBLASLt %.1f -> %.1f (%.2f TB/s); backward dB^T + dxa cuBLASLt %.1f -> %.1f (%.2f TB/s)\n",
              name, rp, T, out, mb, up, up_tc, mb / 1e6 / (up_tc * 1e-6), back, back_tc, mb / 1e6 / (back_tc * 1e-6));
  int& run = cuda::lora_up_back_run();
  const int chosen_run = run;
  if (rp > 8) {  // above rank 8: the default run against a few (the forward's knob as at rank 8)
    for (const int n : {4, 8, 16, 32, 64}) {
      run = n;
      std::printf("  timing %s rp=%d T=%d backward in runs of %d steps: %.1f us (default %.1f)\n", name, rp, T, n,
                  us_a_call(backward), back_tc);
    }
    run = chosen_run;
    return;
  }
  int& per_sm = cuda::lora_up_blocks_per_sm();
  const int chosen = per_sm;
  for (const int n : {2, 4, 8}) {
    per_sm = n;
    std::printf("  timing %s T=%d forward at %d blocks an SM: %.1f us (default %.1f)\n", name, T, n, us_a_call(forward), up_tc);
  }
  per_sm = chosen;
  for (const int n : {1, 2, 4, 8, 16}) {
    run = n;
    std::printf("  timing %s T=%d backward in runs of %d steps: %.1f us (default %.1f)\n", name, T, n, us_a_call(backward), back_tc);
  }
  run = chosen_run;
}

}  // namespace

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "lora up projection (padded rank 8..64, tensor cores)", [](TestContext& t) {
    cuda::DeviceArena arena(std::size_t{2} << 30);
    check_shape(t, arena, 37, 64, 4.0f);       // one strip, one column group, T % 16 == 5
    check_shape(t, arena, 121, 32, 4.0f);      // the tiny test models' k/v (cuda_test_model)
    check_shape(t, arena, 1, 520, 2.0f);       // one token; two groups, the second one lane's columns
    check_shape(t, arena, t.small ? 20 : 100, 1000, 4.0f);  // a last strip of 40 columns
    check_shape(t, arena, t.small ? 48 : 300, t.small ? 1536 : 3584, 0.5f);  // q_proj's width: 7 groups
    check_shape(t, arena, 16, t.small ? 4096 : 18944, 4.0f);  // gate/up's: 37 groups, one step
    check_shape(t, arena, t.small ? 70 : 600, 512, 4.0f);     // k/v's: warps cross strips, one group
    for (const int rp : {16, 32, 64}) {
      check_shape(t, arena, 37, 64, 4.0f, rp);
      check_shape(t, arena, 1, 520, 2.0f, rp);
      check_shape(t, arena, t.small ? 20 : 100, 1000, 4.0f, rp);
      check_shape(t, arena, t.small ? 48 : 200, t.small ? 1536 : 3584, 0.5f, rp);
      check_shape(t, arena, t.small ? 70 : 300, 512, 4.0f, rp);
    }
    check_shape(t, arena, t.small ? 20 : 100, 1000, 4.0f, 24);  // odd rank groups
    check_shape(t, arena, 37, 520, 2.0f, 40);
    refusals(t, arena);
    if (!t.small) {
      cuda::Gemm gemm(arena);
      for (const int T : {2048, 64}) {
        time_shape(arena, gemm, "q/o/down", T, 3584);
        time_shape(arena, gemm, "k/v", T, 512);
        time_shape(arena, gemm, "gate/up", T, 18944);
      }
      for (const int rp : {16, 32, 64}) {
        time_shape(arena, gemm, "q/o/down", 2048, 3584, rp);
        time_shape(arena, gemm, "gate/up", 2048, 18944, rp);
      }
    }
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
