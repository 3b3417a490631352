// The RoPE angle, shared by rope.comp and rope_kv_store.comp so that the two
// rotate to the bit alike (the header of rope.comp says why it is computed so).

float powi(float b, uint e) {
    precise float r = 1.0;
    precise float s = b;
    while (e != 0u) {
        if ((e & 1u) != 0u)
            r *= s;
        s *= s;
        e >>= 1;
    }
    return r;
}

// 2*pi = C1 + C2 + C3; C1 has 8 significant bits and C2 12, so k*C1 is exact
// for k < 2^16 (|theta| < 4e5) and k*C2 for k < 2^12.
const float C1 = 6.28125;
const float C2 = 0.0019354820251464844;
const float C3 = -1.7484555314695172e-07;
const float INV_2PI = 0.15915493667125702;

float reduce_angle(float t) {
    precise float k = roundEven(t * INV_2PI);
    precise float r = t - k * C1;
    r = r - k * C2;
    r = r - k * C3;
    return r;
}

// Pair j's angle at position fpos (float(pos) * freq_scale). inv_factor is
// 1 / rope_freqs[j] rounded to float on the host, 1.0 without factors (an
// exact multiplication, so the angle is then the one without them): llama.cpp
// divides by the factor, but GLSL's division is not correctly rounded.
float rope_theta(float fpos, float theta_scale, uint j, float inv_factor) {
    precise float theta = fpos * powi(theta_scale, j);
    theta = theta * inv_factor;
    return theta;
}

// cos and sin of that angle.
vec2 rope_cs(float fpos, float theta_scale, uint j, float inv_factor) {
    const float a = reduce_angle(rope_theta(fpos, theta_scale, j, inv_factor));
    return vec2(cos(a), sin(a));
}
