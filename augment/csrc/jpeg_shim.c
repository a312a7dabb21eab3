/* A small C layer over the system libjpeg-turbo (jpeglib.h, libjpeg62-turbo-dev).
 *
 * Why C: libjpeg reports errors by calling error_exit, which must not return; the only safe way to
 * recover is setjmp/longjmp, and longjmp across Rust frames is undefined behaviour. Every entry point
 * here sets its own jmp_buf, so errors come back as a return code and a message, and no Rust frame
 * is ever skipped.
 *
 * What it adds over plain libjpeg: DCT-domain scaling (1/2, 1/4, 1/8), region-of-interest decode
 * (jpeg_crop_scanline + jpeg_skip_scanlines: rows above the region are entropy-decoded only, rows
 * below are never touched, columns outside are not IDCT'd), CMYK/YCCK to RGB, a pixel limit checked
 * on the header before any allocation, and a strict mode that turns libjpeg's warnings (a truncated
 * file is a warning to libjpeg) into errors.
 */
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#define RCL_OK 0
#define RCL_ERR_DECODE 1
#define RCL_ERR_LIMIT 2
#define RCL_ERR_ARG 3
#define RCL_ERR_ALLOC 4

typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  int strict;
  char msg[JMSG_LENGTH_MAX];
} rcl_error_mgr;

static void rcl_error_exit(j_common_ptr cinfo) {
  rcl_error_mgr *err = (rcl_error_mgr *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, err->msg);
  longjmp(err->jump, 1);
}

static void rcl_emit_message(j_common_ptr cinfo, int level) {
  rcl_error_mgr *err = (rcl_error_mgr *)cinfo->err;
  if (level < 0) {
    /* A warning: corrupt data, premature end of file, ... */
    if (err->strict) {
      (*cinfo->err->format_message)(cinfo, err->msg);
      longjmp(err->jump, 1);
    }
    cinfo->err->num_warnings++;
  }
}

static void rcl_output_message(j_common_ptr cinfo) { (void)cinfo; }

static void rcl_init_error(rcl_error_mgr *err, int strict) {
  jpeg_std_error(&err->pub);
  err->pub.error_exit = rcl_error_exit;
  err->pub.emit_message = rcl_emit_message;
  err->pub.output_message = rcl_output_message;
  err->strict = strict;
  err->msg[0] = 0;
}

static void copy_msg(char *dst, size_t dst_len, const char *src) {
  if (dst && dst_len) {
    strncpy(dst, src, dst_len - 1);
    dst[dst_len - 1] = 0;
  }
}

typedef struct {
  uint32_t width;
  uint32_t height;
  int32_t components;
  int32_t color_space; /* J_COLOR_SPACE of the file */
  int32_t progressive;
} rcl_jpeg_info;

int rcl_jpeg_info_read(const uint8_t *buf, size_t len, rcl_jpeg_info *info, char *errbuf,
                       size_t errlen) {
  struct jpeg_decompress_struct cinfo;
  rcl_error_mgr err;
  rcl_init_error(&err, 0);
  cinfo.err = &err.pub;
  if (setjmp(err.jump)) {
    copy_msg(errbuf, errlen, err.msg);
    jpeg_destroy_decompress(&cinfo);
    return RCL_ERR_DECODE;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, buf, (unsigned long)len);
  jpeg_read_header(&cinfo, TRUE);
  info->width = cinfo.image_width;
  info->height = cinfo.image_height;
  info->components = cinfo.num_components;
  info->color_space = cinfo.jpeg_color_space;
  info->progressive = cinfo.progressive_mode ? 1 : 0;
  jpeg_destroy_decompress(&cinfo);
  return RCL_OK;
}

static void cmyk_row_to_rgb(const uint8_t *src, uint8_t *dst, uint32_t n, int inverted) {
  for (uint32_t i = 0; i < n; i++) {
    uint32_t c = src[4 * i], m = src[4 * i + 1], y = src[4 * i + 2], k = src[4 * i + 3];
    if (!inverted) {
      c = 255 - c;
      m = 255 - m;
      y = 255 - y;
      k = 255 - k;
    }
    /* Adobe (inverted) CMYK: values are 255 - ink, so R = C * K / 255. */
    dst[3 * i] = (uint8_t)((c * k + 127) / 255);
    dst[3 * i + 1] = (uint8_t)((m * k + 127) / 255);
    dst[3 * i + 2] = (uint8_t)((y * k + 127) / 255);
  }
}

/* Decodes `buf` to interleaved RGB.
 *
 * scale_denom: 1, 2, 4 or 8 (DCT scaling). The region (rx, ry, rw, rh) is in scaled output
 * coordinates; rw == 0 means the whole image. `out` receives rh rows of rw*3 bytes (the exact region,
 * whatever iMCU alignment libjpeg needed internally). out_w/out_h report the region size, and
 * scaled_w/scaled_h the size of the whole scaled image.
 *
 * max_pixels bounds width*height of the file before anything is allocated. strict != 0 turns
 * libjpeg warnings (truncation, corrupt segments) into errors. fast_dct selects the integer IDCT.
 */
int rcl_jpeg_decode(const uint8_t *buf, size_t len, int scale_denom, int strict, int fast_dct,
                    uint64_t max_pixels, uint32_t rx, uint32_t ry, uint32_t rw, uint32_t rh,
                    uint8_t *out, size_t out_cap, uint32_t *out_w, uint32_t *out_h,
                    uint32_t *scaled_w, uint32_t *scaled_h, char *errbuf, size_t errlen) {
  struct jpeg_decompress_struct cinfo;
  rcl_error_mgr err;
  uint8_t *volatile scratch = NULL;
  rcl_init_error(&err, strict);
  cinfo.err = &err.pub;
  if (scale_denom != 1 && scale_denom != 2 && scale_denom != 4 && scale_denom != 8) {
    copy_msg(errbuf, errlen, "scale denominator must be 1, 2, 4 or 8");
    return RCL_ERR_ARG;
  }
  if (setjmp(err.jump)) {
    copy_msg(errbuf, errlen, err.msg);
    jpeg_destroy_decompress(&cinfo);
    free(scratch);
    return RCL_ERR_DECODE;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, buf, (unsigned long)len);
  jpeg_read_header(&cinfo, TRUE);
  if ((uint64_t)cinfo.image_width * (uint64_t)cinfo.image_height > max_pixels) {
    snprintf(errbuf, errlen, "image of %ux%u pixels exceeds the limit of %llu pixels",
             cinfo.image_width, cinfo.image_height, (unsigned long long)max_pixels);
    jpeg_destroy_decompress(&cinfo);
    return RCL_ERR_LIMIT;
  }
  int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_EXT_RGB;
  cinfo.scale_num = 1;
  cinfo.scale_denom = (unsigned int)scale_denom;
  cinfo.dct_method = fast_dct ? JDCT_IFAST : JDCT_ISLOW;
  jpeg_start_decompress(&cinfo);
  uint32_t full_w = cinfo.output_width, full_h = cinfo.output_height;
  *scaled_w = full_w;
  *scaled_h = full_h;
  /* The parameters are never assigned after setjmp (they would be clobbered by a longjmp). */
  int whole = rw == 0 || rh == 0;
  uint32_t x0 = whole ? 0 : rx, y0 = whole ? 0 : ry;
  uint32_t width = whole ? full_w : rw, height = whole ? full_h : rh;
  if (x0 >= full_w || y0 >= full_h || width > full_w - x0 || height > full_h - y0) {
    snprintf(errbuf, errlen, "region %ux%u+%u+%u outside the %ux%u scaled image", width, height,
             x0, y0, full_w, full_h);
    jpeg_destroy_decompress(&cinfo);
    return RCL_ERR_ARG;
  }
  if ((size_t)width * height * 3 > out_cap) {
    copy_msg(errbuf, errlen, "output buffer too small");
    jpeg_destroy_decompress(&cinfo);
    return RCL_ERR_ARG;
  }
  JDIMENSION xoff = x0, cw = width;
  int cropped = x0 != 0 || width != full_w;
  if (cropped) {
    jpeg_crop_scanline(&cinfo, &xoff, &cw);
  }
  uint32_t skip_left = x0 - xoff;
  int in_comp = cmyk ? 4 : 3;
  /* libjpeg writes straight into `out` when its (iMCU-aligned) crop is exactly the region. */
  int direct = !cmyk && skip_left == 0 && cw == width;
  if (!direct) {
    scratch = (uint8_t *)malloc((size_t)cinfo.output_width * in_comp);
    if (!scratch) {
      jpeg_destroy_decompress(&cinfo);
      copy_msg(errbuf, errlen, "out of memory");
      return RCL_ERR_ALLOC;
    }
  }
  if (y0 > 0) {
    jpeg_skip_scanlines(&cinfo, y0);
  }
  for (uint32_t r = 0; r < height; r++) {
    uint8_t *dst = out + (size_t)r * width * 3;
    JSAMPROW row = direct ? dst : scratch;
    if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) {
      copy_msg(errbuf, errlen, "decoder returned no scanline");
      jpeg_destroy_decompress(&cinfo);
      free(scratch);
      return RCL_ERR_DECODE;
    }
    if (!direct) {
      if (cmyk) {
        cmyk_row_to_rgb(scratch + (size_t)skip_left * 4, dst, width, cinfo.saw_Adobe_marker);
      } else {
        memcpy(dst, scratch + (size_t)skip_left * 3, (size_t)width * 3);
      }
    }
  }
  if (cinfo.output_scanline == cinfo.output_height) {
    jpeg_finish_decompress(&cinfo);
  } else {
    jpeg_abort_decompress(&cinfo);
  }
  jpeg_destroy_decompress(&cinfo);
  free(scratch);
  *out_w = width;
  *out_h = height;
  return RCL_OK;
}

/* Encodes interleaved RGB (or grayscale when components == 1) as a baseline JPEG with 4:2:0 chroma
 * and optimized Huffman tables. *out is malloc'ed by libjpeg; release it with rcl_jpeg_free. */
int rcl_jpeg_encode(const uint8_t *pixels, uint32_t width, uint32_t height, int components,
                    int quality, uint8_t **out, size_t *out_len, char *errbuf, size_t errlen) {
  struct jpeg_compress_struct cinfo;
  rcl_error_mgr err;
  unsigned char *volatile mem = NULL;
  unsigned long mem_len = 0;
  rcl_init_error(&err, 0);
  cinfo.err = &err.pub;
  if (components != 1 && components != 3) {
    copy_msg(errbuf, errlen, "components must be 1 or 3");
    return RCL_ERR_ARG;
  }
  if (setjmp(err.jump)) {
    copy_msg(errbuf, errlen, err.msg);
    jpeg_destroy_compress(&cinfo);
    free(mem);
    return RCL_ERR_DECODE;
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, (unsigned char **)&mem, &mem_len);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = components;
  cinfo.in_color_space = components == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  cinfo.optimize_coding = TRUE;
  cinfo.dct_method = JDCT_ISLOW;
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = (JSAMPROW)(pixels + (size_t)cinfo.next_scanline * width * components);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  *out = mem;
  *out_len = mem_len;
  return RCL_OK;
}

void rcl_jpeg_free(uint8_t *p) { free(p); }
