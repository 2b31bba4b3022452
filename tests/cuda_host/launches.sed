# kernel<<<grid, block, shared, stream>>>(args)  ->  DM_HOST_LAUNCH(kernel, grid, block, shared, stream)(args)
# (kernel may be a template's instance: name<T>)
s/\([A-Za-z_][A-Za-z0-9_]*\(<[A-Za-z0-9_]*>\)\{0,1\}\)<<</DM_HOST_LAUNCH(\1, /g
s/>>>(/)(/g
