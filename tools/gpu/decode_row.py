"""One summary row of a decode_bench JSON line (tools/gpu/decode_check.sh)."""
import json
import sys

r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
print(f"{r['decode_tok_s']} tok/s, {r['ms_per_token']} ms/token, {100 * r['frac_bound_measured']:.1f}% of "
      f"{r['bound_tok_s_measured']} at {r['read_bw_tb_s']} TB/s, prefill {r['prefill_ms']} ms, "
      f"{r['step_kernels']} kernels/step, generator {r['generator_tok_s']} (ids equal {r['generator_ids_equal']}), "
      f"{r['peak_mem_gb']} GB")
