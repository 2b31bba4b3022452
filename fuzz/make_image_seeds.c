/* make_image_seeds.c - small images in every format stb_image_write
 * writes, as seeds for fuzz_image: make_image_seeds DIR */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    enum { W = 13, H = 9 };
    unsigned char rgb[W * H * 3], grey[W * H];
    float hdr[W * H * 3];
    for (int i = 0; i < W * H; i++) {
        grey[i] = (unsigned char)(i * 7);
        for (int c = 0; c < 3; c++) {
            rgb[3 * i + c] = (unsigned char)(i * (c + 3) + 40 * c);
            hdr[3 * i + c] = rgb[3 * i + c] / 64.0f;
        }
    }
    char p[4096];
    int ok = 1;
#define OUT(name) (snprintf(p, sizeof p, "%s/%s", argv[1], name), p)
    ok &= stbi_write_png(OUT("rgb.png"), W, H, 3, rgb, W * 3);
    ok &= stbi_write_png(OUT("grey.png"), W, H, 1, grey, W);
    ok &= stbi_write_bmp(OUT("rgb.bmp"), W, H, 3, rgb);
    ok &= stbi_write_tga(OUT("rgb.tga"), W, H, 3, rgb);
    ok &= stbi_write_jpg(OUT("rgb.jpg"), W, H, 3, rgb, 90);
    ok &= stbi_write_jpg(OUT("grey.jpg"), W, H, 1, grey, 50);
    ok &= stbi_write_hdr(OUT("rgb.hdr"), W, H, 3, hdr);
    /* binary PPM and PGM, and a 1x1 GIF (clear code, index 0, end code) */
    FILE *f = fopen(OUT("rgb.ppm"), "wb");
    ok &= f && fprintf(f, "P6\n# seed\n%d %d\n255\n", W, H) > 0 && fwrite(rgb, 1, sizeof rgb, f) == sizeof rgb;
    ok &= f && fclose(f) == 0;
    f = fopen(OUT("grey.pgm"), "wb");
    ok &= f && fprintf(f, "P5 %d %d 255\n", W, H) > 0 && fwrite(grey, 1, sizeof grey, f) == sizeof grey;
    ok &= f && fclose(f) == 0;
    static const unsigned char gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 10, 200, 30, 255,
                                        255, 255, 0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b};
    f = fopen(OUT("dot.gif"), "wb");
    ok &= f && fwrite(gif, 1, sizeof gif, f) == sizeof gif;
    ok &= f && fclose(f) == 0;
    return ok ? 0 : 1;
}
