
    value = value + 100000000;
    printf("%d\n", value);
    return 0;
}
