/* decl/exchange.h - include/dlpx/exchange.h for cffi (see decl/README). */

#define DLPX_EXPORT_COPY 1
#define DLPX_EXPORT_COPIED 2
#define DLPX_IMPORT_READONLY 1
#define DLPX_IMPORT_LEGACY_READONLY 2

int dlpx_tensor_export(const dlpx_tensor *tensor, uint32_t flags,
                       DLManagedTensorVersioned **out);
int dlpx_tensor_export_legacy(const dlpx_tensor *tensor, uint32_t flags, DLManagedTensor **out);
int dlpx_tensor_import(DLManagedTensorVersioned *managed, uint32_t flags, dlpx_tensor **out);
int dlpx_tensor_import_legacy(DLManagedTensor *managed, uint32_t flags, dlpx_tensor **out);
