// The Ollama Modelfile written beside an exported GGUF: Ollama does not run the Jinja chat template
// stored in the GGUF, so the ChatML layout Qwen2.5 was trained on is restated in Ollama's Go
// template syntax, with the stop strings that end a turn (without them a reply runs on into a
// made-up next turn, the classic "never stops" report) and the system prompt the adapter was
// trained with.
#pragma once
#include <string>

#include <fmt/format.h>

#include "peft/core/error.hpp"

namespace peft::examples {

inline std::string ollama_modelfile(const std::string& gguf, const std::string& system) {
  // Ollama keeps a request's system messages in .Messages as well as joining them into .System
  // (template.go's collate, with the Modelfile's SYSTEM prepended as one by the server), so the loop
  // skips them: rendered there too, every prompt would carry the system block twice, unlike training.
  // The last message gets no <|im_end|> when it is the assistant's (a reply to continue); after any
  // other last message comes the assistant header, as add_generation_prompt does.
  const std::string tmpl = R"({{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}
{{- if ne .Role "system" }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}
{{- end }})";
  require(system.find("\"\"\"") == std::string::npos, "the system prompt holds \"\"\", which a Modelfile cannot quote");
  return fmt::format("# Written by peft's export. Use: ollama create NAME -f Modelfile\n"
                     "FROM {}\n\nTEMPLATE \"\"\"{}\"\"\"\n\nSYSTEM \"\"\"{}\"\"\"\n\n"
                     "PARAMETER stop \"<|im_start|>\"\nPARAMETER stop \"<|im_end|>\"\nPARAMETER stop \"<|endoftext|>\"\n",
                     gguf, tmpl, system);
}

}  // namespace peft::examples
