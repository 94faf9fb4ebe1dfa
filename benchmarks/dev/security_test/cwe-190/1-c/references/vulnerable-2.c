
    int result = value + 100000000;
    if (result < value) {
        printf("overflow detected\n");
        return 1;
    }
    printf("%d\n", result);
    return 0;
}
