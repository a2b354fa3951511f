/* The preview engine's two per-frame pixel passes in C (see native_warp.py): the warp's
 * backward maps (the mesh's triangles scan-converted into rows of pixels, each pixel mapped by
 * its triangle's affine map) and the blend of the animated crop into the portrait. Each does,
 * number for number, what the NumPy code in preview.py does (same formulas, same float
 * widths, no fused multiply-add), so frames are the same whichever runs. Called through
 * ctypes, which lets go of Python's GIL meanwhile: the face mesh's thread runs on. */
#include <math.h>
#include <stdint.h>

/* Backward maps of a window h x w (map_x, map_y: float32, filled beforehand with each pixel's
 * own crop coordinates). tri: (n, 3, 2) float64 corners in window pixels, in drawing order;
 * affine: (n, 6) float64 rows a00 a01 a10 a11 shift_x shift_y mapping crop coordinates of the
 * target to the source; (x0, y0): the window's place in the crop. Later triangles overwrite
 * earlier ones where they share pixels. */
void backward_maps(const double *tri, const double *affine, long n, long h, long w, long x0, long y0,
                   float *map_x, float *map_y) {
    for (long t = 0; t < n; t++) {
        const double *p = tri + 6 * t;
        /* corners sorted by y, stable (as np.argsort(kind="stable")) */
        int idx[3] = {0, 1, 2};
        for (int i = 1; i < 3; i++) {
            int k = idx[i], j = i - 1;
            while (j >= 0 && p[2 * idx[j] + 1] > p[2 * k + 1]) { idx[j + 1] = idx[j]; j--; }
            idx[j + 1] = k;
        }
        double xa = p[2 * idx[0]], ya = p[2 * idx[0] + 1];
        double xb = p[2 * idx[1]], yb = p[2 * idx[1] + 1];
        double xc = p[2 * idx[2]], yc = p[2 * idx[2] + 1];
        double top_f = ceil(ya);
        long top = top_f > 0 ? (long)top_f : 0;
        double bottom_f = floor(yc);
        long bottom = (long)bottom_f < h - 1 ? (long)bottom_f : h - 1;
        const double *a = affine + 6 * t;
        float ax = (float)a[0], ay = (float)a[2];
        for (long y = top; y <= bottom; y++) {
            double yy = (double)y;
            double lng = xa + (yy - ya) * (xc - xa) / (yc - ya);
            int upper = (yy < yb) || (yb == yc);
            double x_lo = upper ? xa : xb, y_lo = upper ? ya : yb;
            double x_hi = upper ? xb : xc, y_hi = upper ? yb : yc;
            double sht = (y_hi == y_lo) ? x_hi : x_lo + (yy - y_lo) * (x_hi - x_lo) / (y_hi - y_lo);
            double lo = lng < sht ? lng : sht, hi = lng > sht ? lng : sht;
            double first_f = ceil(lo);
            long first = first_f > 0 ? (long)first_f : 0;
            long last = (long)floor(hi);
            if (last > w - 1) last = w - 1;
            if (last < first) continue;
            double px = (double)(first + x0), py = (double)(y + y0);
            float sx = (float)(a[0] * px + a[1] * py + a[4]);
            float sy = (float)(a[2] * px + a[3] * py + a[5]);
            float *mx = map_x + y * w + first, *my = map_y + y * w + first;
            for (long j = 0; j <= last - first; j++) {
                float along = (float)j;
                mx[j] = sx + ax * along;
                my[j] = sy + ay * along;
            }
        }
    }
}

/* moved = |map_x - x| + |map_y - y| > 0.05 for each pixel of an h x w window at (x0, y0) of
 * the crop: the pixels the warp changed (bool, row stride moved_stride bytes). */
void moved_pixels(const float *map_x, const float *map_y, long h, long w, long x0, long y0, uint8_t *moved,
                  long moved_stride) {
    for (long y = 0; y < h; y++) {
        const float *mx = map_x + y * w, *my = map_y + y * w;
        uint8_t *m = moved + y * moved_stride;
        float yy = (float)(y + y0);
        for (long x = 0; x < w; x++) {
            float d = fabsf(mx[x] - (float)(x + x0)) + fabsf(my[x] - yy);
            m[x] = d > 0.05f;
        }
    }
}

/* out = round(out * (1 - a) + back * a), a = alpha / 255, per pixel of an h x w x 3 region;
 * out is a view into the portrait (row stride out_stride bytes), back and alpha contiguous. */
void blend(uint8_t *out, long out_stride, const uint8_t *back, const uint8_t *alpha, long h, long w) {
    for (long y = 0; y < h; y++) {
        uint8_t *o = out + y * out_stride;
        const uint8_t *b = back + y * w * 3;
        const uint8_t *al = alpha + y * w;
        for (long x = 0; x < w; x++) {
            float a = (float)al[x] / 255.0f;
            if (al[x] == 0) continue; /* a = 0: the portrait's own pixel, exactly */
            float keep = 1.0f - a;
            for (int c = 0; c < 3; c++) {
                float v = (float)o[3 * x + c] * keep + (float)b[3 * x + c] * a;
                o[3 * x + c] = (uint8_t)nearbyintf(v);
            }
        }
    }
}
