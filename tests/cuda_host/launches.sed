# kernel<<<grid, block, shared, stream>>>(args)  ->  DM_HOST_LAUNCH(kernel, grid, block, shared, stream)(args)
s/\([A-Za-z_][A-Za-z0-9_]*\)<<</DM_HOST_LAUNCH(\1, /g
s/>>>(/)(/g
