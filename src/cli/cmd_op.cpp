// gdn op: runs one op of the family on tensors from a safetensors file and writes the
// results to another: the black box anyone can check us against (gdn/op_io.h).
#include "cli/command.h"
#include "gdn/op_io.h"

namespace {

struct OpArgs {
  std::string device = "cpu", variant = "gated_deltanet", form = "chunk", in, out;
  bool backward = false, no_l2norm = false;
  double scale = 0;
  int chunk_size = 64;
};

GDN_COMMAND("op", "run one op (forward, optionally backward) on tensors from a safetensors file", [](CLI::App& app) {
  auto args = std::make_shared<OpArgs>();
  app.add_option("--variant", args->variant,
                 "linear_attention, retnet, mamba2, gla, deltanet, gated_deltanet, kda or longhorn")
      ->required();
  app.add_option("--device", args->device,
                 "cpu, or cuda: the CUDA kernels (gated_deltanet, deltanet, kda, mamba2, linear_attention, gla; K = V = 128; "
                 "forms chunk and recurrent)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--form", args->form, "chunk, recurrent (fp32) or reference (fp64 definition, fp64 outputs)")
      ->capture_default_str();
  app.add_flag("--backward", args->backward, "also compute dq, dk, dv, dg, dbeta, dh0 (needs tensor do)");
  app.add_flag("--no-l2norm", args->no_l2norm, "do not L2-normalise q and k");
  app.add_option("--scale", args->scale, "output scale (default K^-1/2)")->check(CLI::PositiveNumber);
  app.add_option("--chunk-size", args->chunk_size, "chunk size of the chunk form")
      ->check(CLI::IsMember({16, 32, 64}))
      ->capture_default_str();
  app.add_option("--in", args->in, "input: q, k, v, beta, [g, h0, cu_seqlens, do, dht]")->required();
  app.add_option("--out", args->out, "output: o, ht [, dq, dk, dv, dg, dbeta, dh0]")->required();
  app.callback([args] {
    gdn::OpRunOptions opt;
    opt.device = gdn::parse_op_device(args->device);
    opt.variant = gdn::parse_variant(args->variant);
    opt.form = gdn::parse_form(args->form);
    opt.backward = args->backward;
    opt.l2norm_qk = !args->no_l2norm;
    opt.scale = args->scale;
    opt.chunk_size = args->chunk_size;
    gdn::run_op_file(args->in, args->out, opt);
  });
});

}  // namespace
