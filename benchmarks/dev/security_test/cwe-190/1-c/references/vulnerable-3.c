
    unsigned int sum = (unsigned int)value + 100000000u;
    printf("%d\n", (int)sum);
    return 0;
}
