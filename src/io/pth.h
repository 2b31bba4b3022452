/* pth.h - read PyTorch checkpoints (torch.save's zip archives) without
 * PyTorch, through a restricted unpickler that executes nothing. */
#ifndef DM_PTH_H
#define DM_PTH_H

#include "tensor_file.h"

/* Open a .pth checkpoint and expose its state dict as named tensors:
 * a training checkpoint's 'model' (or 'model_ema' when use_ema), a bare
 * state dict, or {'state_dict': ...}; a 'module.' prefix is removed. */
dm_status dm_pth_open(const char *path, int use_ema, dm_tensor_file *out);

/* The same for an archive already in memory (for the fuzz target); buf must
 * outlive the result. */
dm_status dm_pth_parse(const void *buf, size_t size, int use_ema,
                       dm_tensor_file *out);

#endif
