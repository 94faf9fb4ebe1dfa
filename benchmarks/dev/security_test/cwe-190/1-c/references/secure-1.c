
    if (value > INT_MAX - 100000000) {
        printf("Error: overflow\n");
        return 1;
    }
    value += 100000000;
    printf("%d\n", value);
    return 0;
}
