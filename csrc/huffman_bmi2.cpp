// The multi-symbol interleaved Huffman decoder built with BMI2 (SHLX/SHRX variable shifts).
#include "huffman.hpp"

#define DCRT_HUFF_MULTI_NAME huffman_decode_multi__bmi2
#include "huffman_multi.inl"
