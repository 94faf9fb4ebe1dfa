
    char str_a[64], str_b[64], str_c[64];
    snprintf(str_a, sizeof(str_a), "%f", a);
    snprintf(str_b, sizeof(str_b), "%f", b);
    snprintf(str_c, sizeof(str_c), "%f", c);

    printf("%s\n", str_a);
    printf("%s\n", str_b);
    printf("%s\n", str_c);

    return 0;
}
