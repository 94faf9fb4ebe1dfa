
    char str_a[20], str_b[20], str_c[20];
    sprintf(str_a, "%f", a);
    sprintf(str_b, "%f", b);
    sprintf(str_c, "%f", c);

    printf("%s %s %s\n", str_a, str_b, str_c);

    return 0;
}
