/* SPDX-License-Identifier: BSD-3-Clause */
#include "t-helpers.h"
int main(void) { return 0; }
