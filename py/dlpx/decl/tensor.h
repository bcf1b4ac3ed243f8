/* decl/tensor.h - include/dlpx/tensor.h for cffi (see decl/README). */

typedef struct dlpx_tensor dlpx_tensor;

#define DLPX_TENSOR_READONLY 1
#define DLPX_TENSOR_SUBBYTE_PADDED 2
#define DLPX_TENSOR_LEGACY_READONLY 4

int dlpx_tensor_empty(DLDataType dtype, int32_t ndim, const int64_t *shape, dlpx_tensor **out);
int dlpx_tensor_zeros(DLDataType dtype, int32_t ndim, const int64_t *shape, dlpx_tensor **out);
int dlpx_tensor_new(DLDataType dtype, int32_t ndim, const int64_t *shape, uint32_t flags,
                    int zero, dlpx_tensor **out);
int dlpx_tensor_from_storage(dlpx_storage *storage, DLDataType dtype, int32_t ndim,
                             const int64_t *shape, const int64_t *strides, int64_t byte_offset,
                             uint32_t flags, dlpx_tensor **out);
int dlpx_tensor_wrap(void *data, DLDevice device, DLDataType dtype, int32_t ndim,
                     const int64_t *shape, const int64_t *strides, uint32_t flags,
                     dlpx_release_fn release, void *ctx, dlpx_tensor **out);
void dlpx_tensor_free(dlpx_tensor *tensor);
int dlpx_tensor_clone(const dlpx_tensor *tensor, dlpx_tensor **out);

const DLTensor *dlpx_tensor_dltensor(const dlpx_tensor *tensor);
int32_t dlpx_tensor_ndim(const dlpx_tensor *tensor);
const int64_t *dlpx_tensor_shape(const dlpx_tensor *tensor);
const int64_t *dlpx_tensor_strides(const dlpx_tensor *tensor);
DLDataType dlpx_tensor_dtype(const dlpx_tensor *tensor);
DLDevice dlpx_tensor_device(const dlpx_tensor *tensor);
int64_t dlpx_tensor_byte_offset(const dlpx_tensor *tensor);
void *dlpx_tensor_data(const dlpx_tensor *tensor);
dlpx_storage *dlpx_tensor_storage(const dlpx_tensor *tensor);
uint32_t dlpx_tensor_flags(const dlpx_tensor *tensor);
int dlpx_tensor_is_readonly(const dlpx_tensor *tensor);
int64_t dlpx_tensor_numel(const dlpx_tensor *tensor);
int64_t dlpx_tensor_nbytes(const dlpx_tensor *tensor);
int dlpx_tensor_is_c_contiguous(const dlpx_tensor *tensor);
int dlpx_tensor_is_f_contiguous(const dlpx_tensor *tensor);
void dlpx_tensor_extent(const dlpx_tensor *tensor, int64_t *lo, int64_t *hi);

#define DLPX_NONE -9223372036854775808
#define DLPX_ALL_DIMS -2147483648

int dlpx_tensor_slice(const dlpx_tensor *tensor, int32_t dim, int64_t start, int64_t stop,
                      int64_t step, dlpx_tensor **out);
int dlpx_tensor_select(const dlpx_tensor *tensor, int32_t dim, int64_t index, dlpx_tensor **out);

typedef enum {
  DLPX_INDEX_INT = 0, DLPX_INDEX_SLICE = 1, DLPX_INDEX_NEWAXIS = 2, DLPX_INDEX_ELLIPSIS = 3
} dlpx_index_kind;

typedef struct {
  int32_t kind;
  int64_t start;
  int64_t stop;
  int64_t step;
} dlpx_index;

int dlpx_tensor_index(const dlpx_tensor *tensor, int32_t n, const dlpx_index *items,
                      dlpx_tensor **out);
int dlpx_tensor_permute(const dlpx_tensor *tensor, int32_t n, const int32_t *axes,
                        dlpx_tensor **out);
int dlpx_tensor_transpose(const dlpx_tensor *tensor, dlpx_tensor **out);
int dlpx_tensor_reshape(const dlpx_tensor *tensor, int32_t ndim, const int64_t *shape,
                        dlpx_tensor **out);
int dlpx_tensor_squeeze(const dlpx_tensor *tensor, int32_t dim, dlpx_tensor **out);
int dlpx_tensor_unsqueeze(const dlpx_tensor *tensor, int32_t dim, dlpx_tensor **out);
int dlpx_tensor_broadcast_to(const dlpx_tensor *tensor, int32_t ndim, const int64_t *shape,
                             dlpx_tensor **out);
int dlpx_tensor_view_as(const dlpx_tensor *tensor, DLDataType dtype, dlpx_tensor **out);
int dlpx_tensor_with_flags(const dlpx_tensor *tensor, uint32_t flags, dlpx_tensor **out);

int dlpx_tensor_copy_into(const dlpx_tensor *dst, const dlpx_tensor *src);
int dlpx_tensor_copy(const dlpx_tensor *tensor, char order, dlpx_tensor **out);
int dlpx_tensor_contiguous(const dlpx_tensor *tensor, dlpx_tensor **out);
