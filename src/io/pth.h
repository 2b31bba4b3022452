/* pth.h - read PyTorch checkpoints (torch.save's zip archives) without
 * PyTorch, through a restricted unpickler that executes nothing. */
#ifndef DM_PTH_H
#define DM_PTH_H

#include "tensor_file.h"

/* Expose a .pth checkpoint in memory (dm_model_file_open maps files) as
 * named tensors: a training checkpoint's 'model' (or 'model_ema' when
 * use_ema), a bare state dict, or {'state_dict': ...}; a 'module.' prefix
 * is removed.  buf must outlive the result. */
dm_status dm_pth_parse(const void *buf, size_t size, int use_ema,
                       dm_tensor_file *out);

#endif
