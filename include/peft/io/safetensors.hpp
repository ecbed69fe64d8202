// safetensors I/O in one include: the memory-mapped, validating reader (one file or a sharded
// model folder) and the writer. Split in two headers so each stays one concern.
#pragma once
#include "peft/io/safetensors_reader.hpp"
#include "peft/io/safetensors_writer.hpp"
