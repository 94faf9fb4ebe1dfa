
    long long result = (long long)value + 100000000LL;
    if (result > INT_MAX || result < INT_MIN) {
        fprintf(stderr, "integer overflow: %lld does not fit in an int\n", result);
        return 1;
    }
    printf("value + 100000000 = %lld\n", result);
    return 0;
}
